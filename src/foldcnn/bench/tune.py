"""``tune``: measure this machine and pick the fold, width rounding, batch size, backend and
precision with the highest images/s for one model, within a time budget.

Candidates whose layer widths are identical (f=4 gives 64/16 channels for every rounding) are
timed once. With a checkpoint, each candidate gets what is known of its accuracy cost: the
checkpoint's own test accuracy for its architecture at fp32, the prediction agreement with fp32
on the checkpoint's calibration images for lower precisions, and "unknown: train it" for
architectures the checkpoint is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from foldcnn.bench.configs import (
    estimate_seconds,
    make_configs,
    skip_unavailable,
)
from foldcnn.bench.sweep import run_sweep
from foldcnn.errors import UsageError
from foldcnn.models import DEFAULT_CHANNEL_MULTIPLE, FoldedCNN, create_model
from foldcnn.models.game import GAME_TASKS

__all__ = ["TuneResult", "architecture", "predict_hint", "tune"]

DEFAULT_MULTIPLES = (DEFAULT_CHANNEL_MULTIPLE, 1, 16)  # the default first: it names ties


@dataclass
class TuneResult:
    model: str
    ranking: list[dict]  # best first: fold, channel_multiple, widths, batch_size, backend, precision, images_per_s, ...
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checkpoint: str | None = None
    checkpoint_build: tuple | None = None  # (fold, channel_multiple) of the timed build the checkpoint is
    min_seconds: float = 0.0  # length of each timed block after fitting the budget

    @property
    def winner(self) -> dict | None:
        return self.ranking[0] if self.ranking else None


def architecture(model: FoldedCNN) -> tuple:
    """What distinguishes two builds of one model: fold and every parameter's shape."""
    return (model.fold, tuple((k, tuple(v.shape)) for k, v in model.state_dict().items()))


def _widths(model: FoldedCNN) -> str:
    return "/".join(str(m.out_channels) for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def _candidates(model: str, folds, multiples, batch_sizes, backends, device, kwargs):
    """Configurations with one width rounding per distinct architecture, and their widths."""
    configs, widths, seen = [], {}, {}
    for f in folds:
        for cm in (multiples if f > 1 else [None]):
            m = create_model(model, fold=f, **({"channel_multiple": cm} if f > 1 else {}), **kwargs)
            arch = architecture(m)
            if arch in seen:
                continue
            seen[arch] = (f, cm)
            widths[(f, cm)] = _widths(m)
            configs += make_configs([model], [f], batch_sizes, backends, device=device, channel_multiples=[cm],
                                    model_kwargs=kwargs)
    return configs, widths, seen


def _fit_budget(configs, trials, seconds, notes):
    """min_seconds per timed block so that the estimate fits ``seconds``; when even short blocks
    do not fit, prunes in turn to one batch size, no torch.compile, one width rounding."""
    def min_s(cs):
        setup = estimate_seconds(cs, 1, 1e-9)
        return (seconds - setup) / (len(cs) * trials * 1.2) if cs else 1.0

    if min_s(configs) < 0.02:
        sizes = sorted({c.requested_batch_size for c in configs})
        keep = min(sizes, key=lambda b: abs(b - 1024))
        configs = [c for c in configs if c.requested_batch_size == keep]
        notes.append(f"budget: only batch size {keep} timed (more batch sizes need a larger --seconds)")
    if min_s(configs) < 0.02 and any(c.backend == "compile" for c in configs):
        configs = [c for c in configs if c.backend != "compile"]
        notes.append("budget: torch.compile left out (its compilation alone takes tens of seconds)")
    multiples = list(dict.fromkeys(c.channel_multiple for c in configs if c.fold > 1))
    if min_s(configs) < 0.02 and len(multiples) > 1:
        configs = [c for c in configs if c.fold == 1 or c.channel_multiple == multiples[0]]
        notes.append(f"budget: only width rounding {multiples[0]} timed (other roundings need a larger --seconds)")
    value = min(max(min_s(configs), 0.02), 1.0)
    if min_s(configs) < 0.02:
        notes.append(f"budget: the estimate ({estimate_seconds(configs, trials, value):.0f} s) exceeds "
                     f"--seconds {seconds:g}")
    return configs, value


def _model_of(model: str | None, checkpoint: str | None, model_kwargs: dict | None) -> tuple[str, dict]:
    """The model to tune and its builder options: given, or the checkpoint's (which must agree)."""
    kwargs: dict = dict(model_kwargs or {})
    if checkpoint is not None:
        from foldcnn.checkpoints import read_config

        cfg = read_config(checkpoint)["model"]
        if model is not None and model != cfg["name"]:
            raise UsageError(f"the checkpoint {checkpoint} holds {cfg['name']!r}, not {model!r}; "
                             f"leave the model name out or give {cfg['name']}")
        model = cfg["name"]
        kwargs = {**{k: tuple(v) if isinstance(v, list) else v for k, v in (cfg.get("kwargs") or {}).items()},
                  **kwargs}
    if model is None:
        raise UsageError("name the model to tune (or give a checkpoint)")
    return model, kwargs


def _row(r, widths: dict) -> dict:
    """One ranking row of a timed candidate."""
    c = r.config
    return {"fold": c.fold, "channel_multiple": c.channel_multiple, "widths": widths[(c.fold, c.channel_multiple)],
            "params": r.params, "batch_size": c.batch_size, "backend": c.backend, "precision": c.precision,
            "device": c.device, "images_per_s": r.images_per_s.median, "images_per_s_min": r.images_per_s.min,
            "images_per_s_max": r.images_per_s.max, "accuracy": "-"}


def tune(
    model: str | None = None,
    *,
    checkpoint: str | None = None,
    folds=(1, 2, 3, 4),
    channel_multiples=DEFAULT_MULTIPLES,
    batch_sizes=(256, 1024),
    backends: list[tuple[str, str]] | None = None,
    device: str = "cpu",
    seconds: float = 60.0,
    trials: int = 2,
    threads: int | None = None,
    progress: bool = False,
    model_kwargs: dict | None = None,
    make_backend=None,
    timer=None,
    available=None,
) -> TuneResult:
    """Time every candidate (fold x width rounding x batch size x backend/precision usable here)
    in interleaved trials and rank them by median images/s, best first.

    ``model`` is a zoo name or an import path ``package.module:Name`` (``model_kwargs`` go to its
    builder); with a ``checkpoint`` it defaults to the checkpoint's model, whose builder options
    (classes, input size) the candidates share. ``seconds`` bounds the run: the
    timed blocks are shortened (and batch sizes or torch.compile dropped, said in ``notes``)
    so that the estimate fits. Candidates are timed with random weights, all in one
    interleaving, so every engine is alive at once: memory grows with the largest batch size
    (an ONNX Runtime session held about 0.5-1 GB at 4096 images of 22 x 52 here).
    """
    notes: list[str] = []
    model, kwargs = _model_of(model, checkpoint, model_kwargs)
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("skipped: no CUDA device; tune with --device cpu here, or on a machine with a GPU")
    if backends is None:
        from foldcnn.backends import available_backends

        backends = available_backends(device)
    configs, widths, archs = _candidates(model, folds, channel_multiples, batch_sizes, backends, device, kwargs)
    runnable, skipped = skip_unavailable(configs, available)
    runnable, min_seconds = _fit_budget(runnable, trials, seconds, notes)
    outcome = run_sweep(runnable, trials=trials, min_seconds=min_seconds, threads=threads, progress=progress,
                        make_backend=make_backend, timer=timer, available=available, group_by=None)
    ranking = sorted((_row(r, widths) for r in outcome.results), key=lambda d: d["images_per_s"], reverse=True)
    result = TuneResult(model, ranking, [f"{c.label()}: {why}" for c, why in [*skipped, *outcome.skipped]], notes,
                        checkpoint=checkpoint, min_seconds=min_seconds)
    if checkpoint is not None:
        _accuracy_notes(result, checkpoint, archs, threads)
    return result


def _accuracy_notes(result: TuneResult, checkpoint: str, archs: dict, threads: int | None) -> None:
    """Fill ``accuracy`` of each ranking row from what the checkpoint tells."""
    from foldcnn.checkpoints import load_calibration, load_checkpoint

    ck = load_checkpoint(checkpoint)
    own = archs.get(architecture(ck.model))  # (fold, channel_multiple) of the checkpoint's build, if timed
    result.checkpoint_build = own
    if own is None:
        result.notes.append(f"the checkpoint's build (fold {ck.model.fold}) was not among the candidates")
    top1 = ck.metrics.get("test_top1")
    cal = load_calibration(checkpoint)
    agreement: dict[tuple[str, str], str] = {}
    for row in result.ranking:
        if (row["fold"], row["channel_multiple"]) != own:
            row["accuracy"] = "unknown: train it"
            continue
        if row["precision"] == "fp32":
            row["accuracy"] = f"test top-1 {top1:.1%} (checkpoint)" if top1 is not None else "the checkpoint's"
            continue
        key = (row["backend"], row["precision"])
        if key not in agreement:
            agreement[key] = _agreement(ck.model, cal, *key, row["device"], threads)
        row["accuracy"] = agreement[key]


def _agreement(model: FoldedCNN, cal, backend: str, precision: str, device: str, threads) -> str:
    """Prediction agreement of ``backend``/``precision`` with eager fp32 on the calibration images."""
    if cal is None:
        return "unknown: the checkpoint has no calibration images"
    from foldcnn.backends.agreement import engine_agreement

    try:
        agree = engine_agreement(model, cal, backend, precision, device=device, threads=threads)
    except Exception as e:  # noqa: BLE001 - the ranking stands without it
        return f"unknown: agreement not measured ({type(e).__name__})"
    return f"{agree:.1%} agreement with fp32 on {len(cal)} calibration images"


def predict_hint(result: TuneResult, row: dict | None = None) -> list[str]:
    """Ready-to-run commands for ``row`` (default: the winner): ``foldcnn predict`` with the
    checkpoint when the row is the checkpoint's own build, otherwise train that build first."""
    row = row or result.winner
    if row is None:
        return []
    run = f"--backend {row['backend']} --precision {row['precision']} --batch-size {row['batch_size']}"
    if row["device"] != "cpu":
        run += f" --device {row['device']}"
    if row["backend"] == "tensorrt":  # the Predictor has no TensorRT engine; its fastest GPU engine
        run = run.replace("--backend tensorrt", "--backend cuda-graphs") + "  # TensorRT: export to ONNX + trtexec"
    if result.checkpoint is not None and (row["fold"], row["channel_multiple"]) == result.checkpoint_build:
        return [f"foldcnn predict {result.checkpoint} --input PATH --out preds.csv {run}"]
    cm = row["channel_multiple"]
    width = "" if row["fold"] == 1 or cm in (None, DEFAULT_CHANNEL_MULTIPLE) else f" --channel-multiple {cm}"
    model = result.model
    source = f"--task {model}" if model in GAME_TASKS else f"--data DATA_DIR --model {model}"
    out = f"runs/{model}-f{row['fold']}" + (f"-cm{cm}" if width else "")
    return [f"foldcnn train {source} --fold {row['fold']}{width} --out {out}",
            f"foldcnn predict {out}/checkpoint --input PATH --out preds.csv {run}"]
