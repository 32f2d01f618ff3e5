"""backend="auto": time each candidate briefly at max_batch and keep the fastest."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable

import torch

from foldcnn.backends.base import Backend, BackendError
from foldcnn.backends.registry import available_backends, create_backend
from foldcnn.models import FoldedCNN

__all__ = ["select_backend"]

MAX_ROUNDS = 5  # timed runs per candidate at most; the median of them is reported


def _candidates(device: str, precisions, calibration, candidates) -> tuple[list[tuple[str, str]], dict]:
    skipped: dict[str, str] = {}
    usable = available_backends(device)
    if candidates is None:
        chosen = [c for c in usable if c[1] in precisions]
    else:
        chosen = []
        for c in candidates:
            name, precision = (c, "fp32") if isinstance(c, str) else tuple(c)
            if (name, precision) in usable:
                chosen.append((name, precision))
            else:
                skipped[f"{name}/{precision}"] = f"not usable on {device} here"
    for name, precision in list(chosen):
        if precision == "int8" and calibration is None:
            chosen.remove((name, precision))
            skipped[f"{name}/{precision}"] = ("no calibration images: pass calibration= uint8 training images "
                                               "(foldcnn.checkpoints.load_calibration)")
    return chosen, skipped


def _build_all(chosen, build, x, skipped: dict, say) -> dict:
    """Build and warm up each (name, precision); a failure goes to ``skipped`` with its reason."""
    built: dict[str, Backend] = {}
    for name, precision in chosen:
        key = f"{name}/{precision}"
        say(f"building {key}")
        try:
            b = build(name, precision=precision)
            b.run(x)  # warm-up (and, for compile, any last compilation)
        except BackendError as e:
            skipped[key] = str(e)
            continue
        built[key] = b
    if not built:
        raise BackendError("every candidate backend failed to build: "
                           + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return built


def _time_interleaved(built: dict, x, seconds: float) -> dict[str, list[float]]:
    """Seconds per run of each backend, rounds interleaved until ``seconds`` are spent (at least one)."""
    times: dict[str, list[float]] = {key: [] for key in built}
    deadline = time.perf_counter() + seconds
    for _ in range(MAX_ROUNDS):
        for key, b in built.items():  # interleaved: a noisy neighbour hits every candidate alike
            start = time.perf_counter()
            b.run(x)
            times[key].append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return times


def select_backend(
    model: FoldedCNN,
    *,
    candidates: list[str | tuple[str, str]] | None = None,
    precisions: tuple[str, ...] = ("fp32",),
    max_batch: int = 1024,
    calibration: torch.Tensor | None = None,
    seconds: float = 10.0,
    device: str = "cpu",
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Backend, dict]:
    """Build each candidate, time it at ``max_batch`` folded inputs, return the fastest.

    ``candidates``: names (fp32) or (name, precision) pairs; default every backend usable here
    at one of ``precisions``. Lower precisions change predictions, so they are candidates only
    when asked for (``precisions=("fp32", "bf16", "int8")``; int8 also needs ``calibration``).
    Each candidate is warmed up once, then timed runs are interleaved across candidates until
    ``seconds`` are spent (at least one, at most MAX_ROUNDS each); the median counts. Returns the
    winning backend (the others are closed) and ``{"picked": "name/precision", "images_per_s":
    {...}, "skipped": {...}, "max_batch": ..., "fold": ...}`` where images counts all f images of
    every folded input. ``progress`` receives one line per step.
    """
    say = progress or (lambda _line: None)
    chosen, skipped = _candidates(device, precisions, calibration, candidates)
    if not chosen:
        why = "".join(f"; {k}: {v}" for k, v in skipped.items())
        raise BackendError(f"no backend to choose from on {device} for precisions {', '.join(precisions)} "
                           f"(usable here: {', '.join(f'{n}/{p}' for n, p in available_backends(device))}{why})")
    x = torch.rand(max_batch, *model.folded_input_shape).numpy()
    build = functools.partial(create_backend, model, threads=threads, device=device, max_batch=max_batch,
                              calibration=calibration)
    built = _build_all(chosen, build, x, skipped, say)
    times = _time_interleaved(built, x, seconds)
    images = max_batch * model.fold
    rate = {k: images / statistics.median(t) for k, t in times.items()}
    picked = max(rate, key=rate.get)
    for key, b in built.items():
        if key != picked:
            b.close()
    say(f"picked {picked}: {rate[picked]:,.0f} images/s")
    report = {"picked": picked, "images_per_s": rate, "skipped": skipped, "max_batch": max_batch,
              "fold": model.fold, "runs": {k: len(t) for k, t in times.items()}}
    return built[picked], report
