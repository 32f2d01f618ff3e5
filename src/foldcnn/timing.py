"""Timing primitives: timers (wall clock or CUDA events), timed blocks and medians of calls.

Every layer that times something uses these: backends (auto selection), the roofline's measured
peaks, the benchmarks (foldcnn.bench.timing adds trial order and statistics on top). It imports
only torch, so the lowest layers can use it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Protocol

import torch

from foldcnn.errors import UsageError

__all__ = ["CudaEventTimer", "Timer", "WallTimer", "median_seconds", "time_block"]


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


def median_seconds(fn: Callable[[], object], repeats: int, timer: Timer | None = None, *,
                   sync: Callable[[], None] | None = None) -> float:
    """Median seconds of ``repeats`` calls of ``fn``, after one warm-up call (allocation, kernel
    selection), followed by ``sync`` when given (so queued GPU work does not land in the first timing).
    ``timer`` defaults to the wall clock."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UsageError(f"repeats must be an int >= 1, got {repeats!r}")
    timer = timer or WallTimer()
    fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        timer.start()
        fn()
        times.append(timer.elapsed_s())
    return statistics.median(times)
