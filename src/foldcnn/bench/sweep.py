"""Throughput sweeps: configurations, interleaved timed trials, medians and spread.

A configuration is one (model, fold, width rounding, batch size in images, backend, precision,
device). Machines here are noisy, so configurations are timed round-robin: trial 1 of every
configuration, then trial 2 of every configuration, ... Each trial is one untimed call (left out
when one call already takes ``min_seconds``) followed by a timed block of at least
``min_seconds`` of back-to-back ``run`` calls (at least one) on inputs already in memory;
images/s counts all f images of every folded input. The result of a configuration is the
median over trials plus its spread (min, max, quartiles).

Backends come from ``foldcnn.backends.create_backend`` (never a private copy); the factory and
the timer are injectable so tests can run deterministic fake timings.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from foldcnn.analysis import analyze
from foldcnn.bench.configs import BenchConfig, skip_unavailable
from foldcnn.bench.timing import (
    CudaEventTimer,
    Timer,
    TrialStats,
    WallTimer,
    interleaved_order,
    time_block,
)
from foldcnn.errors import UsageError
from foldcnn.models import FoldedCNN, create_model, model_entry
from foldcnn.precision import BYTES_PER_ELEMENT
from foldcnn.progress import progress_bar

__all__ = ["BenchResult", "SweepOutcome", "default_backend_factory", "run_sweep"]

CALIBRATION_IMAGES = 48  # random uint8 images for int8 calibration; a multiple of 1, 2, 3 and 4


@dataclass(frozen=True)
class BenchResult:
    config: BenchConfig
    images_per_s: TrialStats
    flops_per_image: float  # foldcnn.analysis.analyze (FLOPs = 2 x MACs + bias adds)
    bytes_per_image: float  # at the config's precision and batch size
    arithmetic_intensity: float
    params: int
    family: str
    timed_calls: int  # over all trials
    timed_seconds: float


@dataclass
class SweepOutcome:
    results: list[BenchResult] = field(default_factory=list)
    skipped: list[tuple[BenchConfig, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------------- sweep
BackendFactory = Callable[..., object]


def default_backend_factory(model: FoldedCNN, config: BenchConfig, *, max_batch: int,
                            calibration: torch.Tensor | None, threads: int | None):
    """Build ``config``'s backend with foldcnn.backends (TensorRT through torch-tensorrt)."""
    if config.backend == "tensorrt":
        from foldcnn.bench.trt import TensorRTRunner

        return TensorRTRunner(model, precision=config.precision, max_batch=max_batch)
    from foldcnn.backends import create_backend

    return create_backend(model, config.backend, precision=config.precision, threads=threads,
                          device=config.device, max_batch=max_batch, calibration=calibration)


def _build_model(config: BenchConfig, seed: int) -> FoldedCNN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(config.model, fold=config.fold, **config.build_kwargs()).eval()


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


class _Group:
    """Models, backends and inputs of the configurations timed together (one interleaving)."""

    def __init__(self, configs, *, seed, threads, factory, skipped, on_status):
        self.models: dict[tuple, FoldedCNN] = {}
        self.backends: dict[tuple, object] = {}
        self.inputs: dict[BenchConfig, object] = {}
        rng = np.random.default_rng(seed)
        for c in configs:
            if c.model_key not in self.models:
                self.models[c.model_key] = _build_model(c, seed)
        max_folded: dict[tuple, int] = {}
        for c in configs:
            max_folded[c.backend_key] = max(max_folded.get(c.backend_key, 0), c.folded_batch)
        failed: dict[tuple, str] = {}
        for c in configs:
            key = c.backend_key
            if key in self.backends or key in failed:
                continue
            model = self.models[c.model_key]
            on_status(f"building {c.backend}/{c.precision} for {c.model} f={c.fold}")
            cal = None
            if c.precision == "int8":
                cal = torch.from_numpy(rng.integers(0, 256, (CALIBRATION_IMAGES, *model.input_shape), dtype=np.uint8))
            try:  # each backend gets its own copy: an engine may convert the module in place
                self.backends[key] = factory(copy.deepcopy(model), c, max_batch=max_folded[key],
                                             calibration=cal, threads=threads)
            # A failing engine (no C++ compiler, no kernel for this precision) must not end the sweep.
            except Exception as e:  # noqa: BLE001
                failed[key] = f"skipped: building {c.backend}/{c.precision} failed: {_short(e)}"
        self.live = []
        for c in configs:
            if c.backend_key in failed:
                skipped.append((c, failed[c.backend_key]))
            else:
                self.live.append(c)
        self._make_inputs(rng)

    def _make_inputs(self, rng: np.random.Generator) -> None:
        """Folded float32 inputs (B/f, f*C, H, W) in [0, 1], in memory before timing starts:
        views into one array of random images per image shape (uint8 / 255, as in real use)."""
        need: dict[tuple, int] = {}
        for c in self.live:
            shape = tuple(self.models[c.model_key].input_shape)
            need[shape] = max(need.get(shape, 0), c.batch_size)
        images = {shape: (rng.integers(0, 256, (n, *shape), dtype=np.uint8) / np.float32(255)).astype(np.float32)
                  for shape, n in need.items()}
        for c in self.live:
            model = self.models[c.model_key]
            x = images[tuple(model.input_shape)][: c.batch_size].reshape(c.folded_batch, *model.folded_input_shape)
            self.inputs[c] = torch.from_numpy(np.ascontiguousarray(x)).to("cuda") if c.device == "cuda" else x

    def close(self) -> None:
        for b in self.backends.values():
            close = getattr(b, "close", None)
            if close is not None:
                close()
        self.backends.clear()


def _check_output(y, c: BenchConfig, num_classes: int) -> None:
    want = (c.folded_batch, c.fold * num_classes)
    if tuple(np.shape(y)) != want:
        raise UsageError(f"{c.backend}/{c.precision} returned logits of shape {tuple(np.shape(y))}, expected {want}")


def run_sweep(
    configs: Sequence[BenchConfig],
    *,
    trials: int = 3,
    min_seconds: float = 0.2,
    warmup_calls: int = 2,
    threads: int | None = None,
    seed: int = 0,
    group_by: str | None = "model",
    progress: bool = False,
    make_backend: BackendFactory | None = None,
    timer: Timer | None = None,
    available: dict[str, set[tuple[str, str]] | None] | None = None,
    cuda: bool | None = None,
) -> SweepOutcome:
    """Time every configuration ``trials`` times, interleaved; returns results and skips.

    Configurations are processed in groups (``group_by="model"``: all folds, batch sizes,
    backends and precisions of one model are interleaved with each other, then their engines
    are freed; ``None``: everything in one interleaving, all engines alive at once). Each
    backend is built once per (model, fold, width, backend, precision, device) with
    ``max_batch`` = its largest folded batch, and warmed up with ``warmup_calls`` calls per
    batch size. Models get seeded random weights (throughput does not depend on weights);
    int8 is calibrated on random uint8 images. Configurations that cannot run here (no CUDA,
    backend missing, engine build failure) are returned in ``skipped`` with a reason.
    """
    if trials < 1 or warmup_calls < 0:
        raise UsageError(f"trials must be >= 1 and warmup_calls >= 0, got {trials} and {warmup_calls}")
    if not min_seconds > 0:
        raise UsageError(f"min_seconds must be > 0, got {min_seconds}")
    if group_by not in ("model", None):
        raise UsageError(f"group_by must be 'model' or None, got {group_by!r}")
    factory = make_backend or default_backend_factory
    if make_backend is not None and available is None:
        available = {"cpu": None, "cuda": None}  # an injected factory builds whatever it is given
    runnable, skipped = skip_unavailable(list(dict.fromkeys(configs)), available, cuda=cuda)
    outcome = SweepOutcome(skipped=list(skipped))
    groups: dict[object, list[BenchConfig]] = {}
    for c in runnable:
        groups.setdefault(c.model if group_by == "model" else None, []).append(c)
    bar = progress_bar(total=len(runnable) * trials, desc="bench", unit="trial", file=sys.stderr,
                       disable=not progress, leave=False)
    try:
        for group_configs in groups.values():
            outcome.results.extend(_run_group(group_configs, trials, min_seconds, warmup_calls, threads,
                                              seed, factory, timer, outcome.skipped, bar))
    finally:
        bar.close()
    return outcome


def _run_group(configs, trials, min_seconds, warmup_calls, threads, seed, factory, timer, skipped, bar):
    group = _Group(configs, seed=seed, threads=threads, factory=factory, skipped=skipped,
                   on_status=lambda s: bar.set_postfix_str(s, refresh=False))
    try:
        live, call_s = [], {}
        for c in group.live:  # warm-up: first calls pay for allocation, kernel choice, compilation
            backend, model = group.backends[c.backend_key], group.models[c.model_key]
            t = timer or (CudaEventTimer() if c.device == "cuda" else WallTimer())
            try:
                for _ in range(max(warmup_calls, 1)):
                    t.start()
                    y = backend.run(group.inputs[c])
                    call_s[c] = t.elapsed_s()  # of the last warm-up call
                    _check_output(y, c, model.num_classes)
                live.append(c)
            except Exception as e:  # noqa: BLE001 - reported as a skip, the sweep goes on
                skipped.append((c, f"skipped: {c.backend}/{c.precision} failed at batch {c.batch_size}: {_short(e)}"))
                bar.update(trials)
        values: dict[BenchConfig, list[float]] = {c: [] for c in live}
        calls: dict[BenchConfig, int] = {c: 0 for c in live}
        seconds: dict[BenchConfig, float] = {c: 0.0 for c in live}
        failed: set[BenchConfig] = set()
        for _, i in interleaved_order(len(live), trials):
            c = live[i]
            if c in failed:
                bar.update(1)
                continue
            run = functools.partial(group.backends[c.backend_key].run, group.inputs[c])
            t = timer or (CudaEventTimer() if c.device == "cuda" else WallTimer())
            bar.set_postfix_str(c.label(), refresh=False)
            try:
                if call_s[c] < min_seconds:  # untimed: the previous configuration left its data in the
                    run()  # caches; a call longer than the block would itself be a cold start only in part
                n, s = time_block(run, min_seconds, t)
            except Exception as e:  # noqa: BLE001 - reported as a skip, the sweep goes on
                failed.add(c)
                skipped.append((c, f"skipped: {c.backend}/{c.precision} failed while timing: {_short(e)}"))
                continue
            finally:
                bar.update(1)
            values[c].append(n * c.batch_size / s)
            calls[c] += n
            seconds[c] += s
        results = []
        for c in live:
            if c in failed:
                continue
            model = group.models[c.model_key]
            rep = analyze(model, batch_size=c.batch_size, bytes_per_element=BYTES_PER_ELEMENT[c.precision])
            results.append(BenchResult(
                config=c, images_per_s=TrialStats.from_values(values[c]),
                flops_per_image=rep.flops_per_image, bytes_per_image=rep.bytes_per_image,
                arithmetic_intensity=rep.arithmetic_intensity, params=rep.params,
                family=model_entry(c.model).family, timed_calls=calls[c], timed_seconds=seconds[c],
            ))
        return results
    finally:
        group.close()
