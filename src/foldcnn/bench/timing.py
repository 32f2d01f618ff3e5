"""Benchmark timing: interleaved trial order and trial statistics, on top of foldcnn.timing's timers,
timed blocks and medians (re-exported here)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from foldcnn.errors import UsageError
from foldcnn.timing import CudaEventTimer, Timer, WallTimer, median_seconds, time_block

__all__ = ["CudaEventTimer", "Timer", "TrialStats", "WallTimer", "interleaved_order", "median_seconds", "time_block"]


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
