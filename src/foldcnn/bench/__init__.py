"""Throughput benchmarks: interleaved sweeps over models x folds x batch sizes x backends x
precisions, peaks measured in the same run, tables / JSON / CSV / plots, and ``tune``.

Imports nothing optional: onnxruntime and matplotlib are imported by the functions that use them.
"""

from foldcnn.bench.configs import (
    RUNTIMES,
    BenchConfig,
    estimate_seconds,
    make_configs,
    skip_unavailable,
)
from foldcnn.bench.peak import Bandwidth, Peak, PeakSet, measure_peaks
from foldcnn.bench.presets import PRESETS, Preset, preset_configs, preset_peaks
from foldcnn.bench.report import (
    RECORD_KEYS,
    best_batches,
    build_records,
    machine_info,
    read_csv,
    read_json,
    write_csv,
    write_json,
)
from foldcnn.bench.sweep import BenchResult, SweepOutcome, run_sweep
from foldcnn.bench.timing import (
    CudaEventTimer,
    TrialStats,
    WallTimer,
    interleaved_order,
    time_block,
)
from foldcnn.bench.tune import TuneResult, predict_hint, tune

__all__ = [
    "PRESETS",
    "RECORD_KEYS",
    "RUNTIMES",
    "Bandwidth",
    "BenchConfig",
    "BenchResult",
    "CudaEventTimer",
    "Peak",
    "PeakSet",
    "Preset",
    "SweepOutcome",
    "TrialStats",
    "TuneResult",
    "WallTimer",
    "best_batches",
    "build_records",
    "estimate_seconds",
    "interleaved_order",
    "machine_info",
    "make_configs",
    "measure_peaks",
    "predict_hint",
    "preset_configs",
    "preset_peaks",
    "read_csv",
    "read_json",
    "run_sweep",
    "skip_unavailable",
    "time_block",
    "tune",
    "write_csv",
    "write_json",
]
