"""Benchmark configurations: what is timed, and which configurations can run on this machine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from foldcnn.errors import UsageError
from foldcnn.fold import check_fold, padded_count
from foldcnn.models import model_entry
from foldcnn.models.base import resolve_width_mult
from foldcnn.precision import check_precision

__all__ = ["RUNTIMES", "BenchConfig", "estimate_seconds", "make_configs", "skip_unavailable"]

# Which runtime executes each backend; the fraction of peak is taken against this runtime's peak.
RUNTIMES = {"eager": "torch", "compile": "torch", "cuda-graphs": "torch", "tensorrt": "tensorrt", "ort": "ort",
            "openvino": "openvino"}
_GPU_ONLY = {"cuda-graphs", "tensorrt"}
# Rough setup seconds per backend (export, quantization, compilation) for the time estimate, and
# per batch size where each new shape compiles again (torch.compile with a cold inductor cache on
# a small CPU: seconds for the first and for each further batch size of a game CNN; a warm
# cache takes well under a second).
_SETUP_S = {"eager": 0.5, "compile": 5.0, "ort": 2.0, "openvino": 2.0, "cuda-graphs": 5.0, "tensorrt": 60.0}
_PER_BATCH_SETUP_S = {"compile": 3.0}
_INT8_SETUP_S = 8.0
# Modest sustained rates for guessing how long one call takes: about the slowest tenth of the
# game CNNs' rates in docs/notebook/2026-11-21-xeon-cpu-targets.md (foldcnn bench --preset cpu-targets;
# the slowest engines there ran them at about 100 GFLOP/s, the bf16 and int8 ones faster);
# a GPU runs them at well over 1 TFLOP/s.
_GUESS_FLOPS_PER_S = {("cpu", "fp32"): 1e11, ("cpu", "bf16"): 1.5e11, ("cpu", "int8"): 1.5e11}
_GUESS_CUDA_FLOPS_PER_S = 1e12


@dataclass(frozen=True)
class BenchConfig:
    """One timed configuration. ``batch_size`` counts IMAGES per ``run`` call (a multiple of
    ``fold``: the call gets ``batch_size / fold`` folded inputs (B/f, f*C, H, W));
    ``requested_batch_size`` is the size asked for before rounding up to a multiple of f."""

    model: str
    fold: int = 1
    batch_size: int = 1024
    backend: str = "eager"
    precision: str = "fp32"  # a foldcnn.precision name
    device: str = "cpu"
    channel_multiple: int | None = None
    requested_batch_size: int | None = field(default=None, compare=False)
    # Builder options of the model (num_classes, input_size) as sorted (name, value) pairs.
    model_kwargs: tuple[tuple[str, object], ...] = ()
    width_mult: float | None = None  # None: sqrt(fold), the paper's width (1.0 at fold 1: the original)

    def __post_init__(self) -> None:
        check_fold(self.fold)
        if self.width_mult is not None:  # the default width (sqrt(fold)) is spelled None: one config, timed once
            wm = resolve_width_mult(self.fold, self.width_mult)
            object.__setattr__(self, "width_mult", None if wm == resolve_width_mult(self.fold, None) else wm)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError(f"batch_size counts images and must be an int >= 1, got {self.batch_size!r}")
        if self.batch_size % self.fold:
            raise UsageError(f"batch_size {self.batch_size} is not a multiple of fold={self.fold}; "
                             f"use {padded_count(self.batch_size, self.fold)} (make_configs rounds it up)")
        check_precision(self.precision)
        if self.device not in ("cpu", "cuda"):
            raise UsageError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.backend not in RUNTIMES:
            raise UsageError(f"unknown backend {self.backend!r}; choose from {', '.join(RUNTIMES)}")
        if self.requested_batch_size is None:
            object.__setattr__(self, "requested_batch_size", self.batch_size)

    @property
    def folded_batch(self) -> int:
        """Folded inputs per ``run`` call: batch_size / fold."""
        return self.batch_size // self.fold

    @property
    def runtime(self) -> str:
        return RUNTIMES[self.backend]

    @property
    def model_key(self) -> tuple:
        """Configurations with one model_key share one model (random weights)."""
        return (self.model, self.fold, self.channel_multiple if self.widened else None, self.model_kwargs,
                self.resolved_width_mult)

    @property
    def resolved_width_mult(self) -> float:
        return resolve_width_mult(self.fold, self.width_mult)

    @property
    def widened(self) -> bool:
        """Whether any hidden width differs from the original's (so channel_multiple matters)."""
        return self.resolved_width_mult != 1.0

    def build_kwargs(self) -> dict:
        """Keyword arguments of ``create_model`` for this configuration's model."""
        kw = {"channel_multiple": self.channel_multiple} if self.widened else {}
        if self.width_mult is not None:
            kw["width_mult"] = self.width_mult
        return {**kw, **dict(self.model_kwargs)}

    @property
    def backend_key(self) -> tuple:
        """Configurations with one backend_key share one backend (one session, many batch sizes)."""
        return (*self.model_key, self.backend, self.precision, self.device)

    def label(self) -> str:
        cm = f" cm={self.channel_multiple}" if self.widened and self.channel_multiple is not None else ""
        wm = "" if self.width_mult is None else f" w={self.width_mult:.3g}"
        return f"{self.model} f={self.fold}{wm}{cm} B={self.batch_size} {self.backend}/{self.precision}/{self.device}"



# ------------------------------------------------------------------------------ configurations
def make_configs(
    models: Iterable[str],
    folds: Iterable[int] = (1,),
    batch_sizes: Iterable[int] = (1024,),
    backends: Iterable[tuple[str, str]] = (("eager", "fp32"),),
    *,
    device: str = "cpu",
    channel_multiples: Iterable[int | None] = (None,),
    model_kwargs: dict | None = None,
    width_mults: Iterable[float | None] = (None,),
) -> list[BenchConfig]:
    """The product models x folds x width_mults x channel_multiples x batch_sizes x (backend, precision) pairs.

    Batch sizes are in images and are rounded UP to a multiple of each fold (no image is
    dropped; the requested size is kept for matching f=1 rows). Requested sizes that round to
    one batch (1 and 4 at f=4) give one configuration, under the exact size when there is one.
    fold=1 has no widened layers, so it gets one configuration whatever the channel multiples.
    ``width_mults`` scale every hidden width (None: sqrt(fold)); at fold 1 a multiplier below 1 is a
    narrower CNN (then the channel multiples apply to it too).
    ``model_kwargs`` go to ``create_model`` (e.g. the num_classes and input_size of a checkpoint).
    """
    out: dict[BenchConfig, BenchConfig] = {}
    multiples = list(channel_multiples) or [None]
    kwargs = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in (model_kwargs or {}).items()))
    for name in models:
        model_entry(name)  # unknown name -> KeyError listing the known ones
        for f in folds:
            f = check_fold(f)
            for wm in dict.fromkeys(width_mults):
                widened = resolve_width_mult(f, wm) != 1.0
                for cm in (multiples if widened else [None]):
                    for b in batch_sizes:
                        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                            raise UsageError(f"batch sizes count images and must be ints >= 1, got {b!r}")
                        for backend, precision in backends:
                            c = BenchConfig(name, f, padded_count(b, f), backend, precision, device, cm, b, kwargs, wm)
                            # Two requested sizes that round to one batch are timed once, under the exact one.
                            if c not in out or b == c.batch_size:
                                out[c] = c
    return list(out.values())


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _tensorrt_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch_tensorrt") is not None


def skip_unavailable(
    configs: Sequence[BenchConfig],
    available: dict[str, set[tuple[str, str]] | None] | None = None,
    *,
    cuda: bool | None = None,
) -> tuple[list[BenchConfig], list[tuple[BenchConfig, str]]]:
    """Split ``configs`` into (runnable, [(config, reason)]) without building anything.

    ``available`` maps a device to its usable (backend, precision) pairs (None for a device:
    no check; default: ask ``foldcnn.backends.available_backends``); ``cuda`` defaults to
    torch.cuda.is_available().
    """
    cuda = _cuda_available() if cuda is None else cuda
    known = dict(available or {})
    runnable, skipped = [], []
    for c in configs:
        reason = None
        if c.device == "cuda" and not cuda:
            reason = "skipped: no CUDA device"
        elif c.backend in _GPU_ONLY and c.device != "cuda":
            reason = f"skipped: {c.backend} runs on CUDA only (use --device cuda)"
        elif c.backend == "tensorrt":
            if not _tensorrt_importable():
                reason = "skipped: torch-tensorrt is not installed"
        else:
            if c.device not in known:
                known[c.device] = _available_pairs(c.device)
            pairs = known[c.device]
            if pairs is not None and (c.backend, c.precision) not in pairs:
                reason = f"skipped: {c.backend}/{c.precision} is not available on this machine ({c.device})"
        if reason:
            skipped.append((c, reason))
        else:
            runnable.append(c)
    return runnable, skipped


def _available_pairs(device: str) -> set[tuple[str, str]]:
    from foldcnn.backends import available_backends

    return set(available_backends(device))


def _flops_per_image(config: BenchConfig, cache: dict) -> float:
    key = config.model_key
    if key not in cache:
        from foldcnn.analysis import analyze
        from foldcnn.models import create_model

        cache[key] = analyze(create_model(config.model, fold=config.fold, **config.build_kwargs()),
                             batch_size=config.fold).flops_per_image
    return cache[key]


def estimate_seconds(configs: Sequence[BenchConfig], trials: int, min_seconds: float, *,
                     warmup_calls: int = 2) -> float:
    """Rough wall time of a sweep: per trial an untimed call (for calls shorter than the block)
    plus a timed block (at least one call), warm-up calls, and engine setup. A call's time is
    guessed from the model's FLOPs at a modest rate, so large batches are not undercounted."""
    cache: dict = {}
    total = 0.0
    for c in configs:
        rate = _GUESS_CUDA_FLOPS_PER_S if c.device == "cuda" else _GUESS_FLOPS_PER_S.get(("cpu", c.precision), 5e10)
        call_s = c.batch_size * _flops_per_image(c, cache) / rate
        untimed = call_s if call_s < min_seconds else 0.0
        total += trials * (untimed + max(min_seconds, call_s)) + max(warmup_calls, 1) * call_s
        total += _PER_BATCH_SETUP_S.get(c.backend, 0.0)
    setups = {c.backend_key: _SETUP_S.get(c.backend, 5.0) + (_INT8_SETUP_S if c.precision == "int8" else 0.0)
              for c in configs}
    return total + sum(setups.values())
