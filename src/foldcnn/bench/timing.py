"""Timing: interleaved trial order, timed blocks, timers (wall clock or CUDA events), medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from foldcnn.errors import UsageError

__all__ = ["CudaEventTimer", "Timer", "TrialStats", "WallTimer", "interleaved_order", "time_block"]


@dataclass(frozen=True)
class TrialStats:
    """Images/s of one configuration over its trials: median and spread."""

    values: tuple[float, ...]  # one per trial, in trial order
    median: float
    q1: float
    q3: float
    min: float
    max: float

    @classmethod
    def from_values(cls, values: Sequence[float]) -> TrialStats:
        vals = tuple(float(v) for v in values)
        if not vals:
            raise UsageError("no trials to summarize")
        if len(vals) == 1:
            q1 = q3 = vals[0]
        else:
            q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
        return cls(vals, statistics.median(vals), q1, q3, min(vals), max(vals))


def interleaved_order(n_configs: int, trials: int) -> list[tuple[int, int]]:
    """(trial, config index) pairs: every configuration once per trial, round-robin.

    Trial t starts at configuration t mod n so that no configuration always runs first
    (right after a slow setup or another process's burst).
    """
    if trials < 1:
        raise UsageError(f"trials must be >= 1, got {trials}")
    order = []
    for t in range(trials):
        start = t % n_configs if n_configs else 0
        order.extend((t, (start + i) % n_configs) for i in range(n_configs))
    return order


# ---------------------------------------------------------------------------------- timing
class Timer(Protocol):
    def start(self) -> None: ...
    def elapsed_s(self) -> float: ...


class WallTimer:
    """Wall-clock timer (``time.perf_counter`` unless another clock is injected)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = self._clock()

    def elapsed_s(self) -> float:
        return self._clock() - self._t0


class CudaEventTimer:
    """GPU timer: CUDA events recorded on the current stream; ``elapsed_s`` synchronizes."""

    def __init__(self) -> None:
        self._start = None

    def start(self) -> None:
        self._start = torch.cuda.Event(enable_timing=True)
        self._start.record()

    def elapsed_s(self) -> float:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return self._start.elapsed_time(end) / 1e3


def time_block(run: Callable[[], object], min_seconds: float, timer: Timer) -> tuple[int, float]:
    """Call ``run`` back to back until ``min_seconds`` have passed; returns (calls, seconds)."""
    if not min_seconds > 0:
        raise UsageError(f"min_seconds must be > 0, got {min_seconds}")
    timer.start()
    calls = 0
    while True:
        run()
        calls += 1
        seconds = timer.elapsed_s()
        if seconds >= min_seconds:
            return calls, seconds
