"""`foldcnn fold`: a user's CNN and images to a faster, verified, deployable folded model.

Steps (each a stage directory under ``out``, so a killed run resumes where it stopped):

a. ``original/``: the unfolded model, trained (or loaded from the user's weights) and evaluated
   on the test split;
b. ``fold<f>/``: each folded model trained with the project's recipe (train-time BatchNorm,
   zero-init head, fold-slot tying, KL distillation from the original, the budget by fold);
c. each evaluated on the same test images (one seeded split, DataSpec);
d. original and folded throughput in one interleaved sweep on this machine (foldcnn.bench, every
   engine usable here, each at its best batch), and the choice: the fastest folded model whose
   test top-1 is within ``max_accuracy_drop`` points of the original's;
e. the chosen model exported to ONNX (and int8 when int8 was its fastest engine) with the sidecar;
f. ``report.json`` and ``report.md``.

The library never prints: ``log`` gets the sentences worth telling, progress goes to tqdm bars.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from foldcnn.checkpoints import CONFIG_FILE, atomic_write, read_state_dict
from foldcnn.errors import OutputExistsError, UsageError
from foldcnn.models import model_entry
from foldcnn.train.config import TrainConfig
from foldcnn.train.sources import DataSpec, check_data_spec

__all__ = ["FoldOptions", "run_fold", "REPORT_JSON", "REPORT_MD"]

REPORT_JSON, REPORT_MD = "report.json", "report.md"
ORIGINAL = "original"


@dataclass(frozen=True)
class FoldOptions:
    """What `foldcnn fold` does; saved in report.json. ``epochs`` None: the budget by fold
    (``recommended_budget``); bench fields set the interleaved throughput sweep of step d."""

    model: str
    data: DataSpec
    folds: tuple[int, ...] = (4,)
    model_kwargs: dict = field(default_factory=dict)
    weights: str | None = None
    max_accuracy_drop: float = 1.0  # points of test top-1
    channel_multiple: int | None = None
    epochs: int | None = None
    original_epochs: int | None = None
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    threads: int = 0
    precision: str = "auto"
    # KL with temperature, as docs/accuracy.md's f=4 rows used (`foldcnn train`'s tip says the same).
    distill: str = "kl"
    slot_diagonal_init: bool | None = None  # None: TrainConfig's default (on for CNNs by import path)
    cross_slot_decay: float = 0.0  # folded stages only (TrainConfig.cross_slot_decay)
    bench_batch_sizes: tuple[int, ...] = (256, 1024)
    bench_backends: tuple[tuple[str, str], ...] | None = None  # None: every CPU engine here (no compile)
    bench_trials: int = 3
    bench_min_seconds: float = 0.3

    def __post_init__(self):
        folds = tuple(self.folds)
        if not folds or any(isinstance(f, bool) or not isinstance(f, int) or f < 2 for f in folds):
            raise UsageError(f"folds must be ints >= 2 (fold 1 is the original, always measured), got "
                             f"{','.join(map(str, folds)) or 'none'}")
        object.__setattr__(self, "folds", tuple(sorted(set(folds))))
        if not (isinstance(self.max_accuracy_drop, (int, float)) and 0 <= self.max_accuracy_drop <= 100):
            raise UsageError(f"max_accuracy_drop is in points of top-1 (0-100), got {self.max_accuracy_drop!r}")
        if self.distill not in ("mse", "kl", "none"):
            raise UsageError(f"distill must be mse, kl or none, got {self.distill!r}")
        TrainConfig(cross_slot_decay=self.cross_slot_decay)  # a bad value fails here, not after the original trained
        if self.bench_trials < 1 or not self.bench_batch_sizes:
            raise UsageError("the throughput sweep needs bench_trials >= 1 and at least one batch size")

    def train_config(self, fold: int, teacher: bool) -> TrainConfig:
        epochs = self.original_epochs if fold == 1 else self.epochs
        over = {"epochs": epochs} if epochs is not None else {}
        return TrainConfig.for_fold(fold, **over, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                                    threads=self.threads, precision=self.precision,
                                    distill=self.distill if teacher else "none",
                                    slot_diagonal_init=self.slot_diagonal_init,
                                    cross_slot_decay=self.cross_slot_decay if fold > 1 else 0.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"] = asdict(self.data)
        return d


def _done(stage: Path) -> bool:
    return (stage / "run.json").is_file() and (stage / "checkpoint" / CONFIG_FILE).is_file()


def _stage(opts: FoldOptions, fold: int, out: Path, resume: bool, progress: bool, log, command) -> dict:
    """Train (or, with weights at fold 1, evaluate) one model; a finished stage is read back."""
    from foldcnn.train.distill_gate import resume_state
    from foldcnn.train.run import run_training

    stage = out / (ORIGINAL if fold == 1 else f"fold{fold}")
    if _done(stage):
        log(f"{stage.name}: done earlier, reusing {stage / 'checkpoint'}")
        return json.loads((stage / "run.json").read_text())
    teacher = out / ORIGINAL / "checkpoint" if fold > 1 and opts.distill != "none" else None
    continuing = resume and resume_state(stage).is_file()
    log(f"{stage.name}: " + ("evaluating the given weights" if fold == 1 and opts.weights else
                             ("resuming" if continuing else "training") + f" fold={fold}"))
    return run_training(opts.model, opts.data, opts.train_config(fold, teacher is not None), stage, fold=fold,
                        channel_multiple=opts.channel_multiple if fold > 1 else None, progress=progress,
                        command=command, teacher=teacher, resume=continuing, model_kwargs=opts.model_kwargs,
                        weights=opts.weights if fold == 1 else None,
                        evaluate_only=fold == 1 and opts.weights is not None, log=log)


def _throughput(opts: FoldOptions, runs: dict[int, dict], progress: bool) -> dict[int, dict]:
    """Best (engine, batch) per fold from one interleaved sweep; {fold: {"images_per_s", "engine", ...}}."""
    from foldcnn.backends import available_backends
    from foldcnn.bench.configs import make_configs
    from foldcnn.bench.sweep import run_sweep

    kwargs = dict(runs[1]["model_config"]["kwargs"])
    backends = opts.bench_backends or tuple(b for b in available_backends("cpu") if b[0] != "compile")
    configs = make_configs([opts.model], [1, *opts.folds], opts.bench_batch_sizes, backends,
                           channel_multiples=[opts.channel_multiple], model_kwargs=kwargs)
    outcome = run_sweep(configs, trials=opts.bench_trials, min_seconds=opts.bench_min_seconds,
                        threads=opts.threads or None, seed=opts.seed, group_by=None, progress=progress)
    best: dict[int, dict] = {}
    for r in outcome.results:
        c, st = r.config, r.images_per_s
        if c.fold not in best or st.median > best[c.fold]["images_per_s"]:
            best[c.fold] = {"images_per_s": round(st.median, 1), "images_per_s_min": round(st.min, 1),
                            "images_per_s_max": round(st.max, 1), "engine": f"{c.backend}/{c.dtype}",
                            "backend": c.backend, "precision": c.dtype, "batch_size": c.batch_size}
    missing = [f for f in (1, *opts.folds) if f not in best]
    if missing:
        why = "; ".join(f"{c.backend}/{c.dtype} f={c.fold}: {reason}" for c, reason in outcome.skipped[:3])
        raise UsageError(f"no engine could time fold(s) {', '.join(map(str, missing))} here ({why})")
    return best


def _remedy(row: dict) -> str:
    """What the folded run measured about itself (run.json), as the advice's remedy."""
    gain, epochs = row.get("still_improving") or {}, row.get("epochs_run", 0)
    if gain.get("yes"):
        return (f"; fold {row['fold']} was still improving when it stopped (+{gain['val_top1_gain_points']:g} points "
                f"of val top-1 over its last {gain['over_epochs']} of {epochs} epochs): train it longer, e.g. "
                f"--epochs {2 * epochs} in a new --out")
    return (f"; fold {row['fold']} had stopped improving (best val at epoch {row.get('best_epoch')} of {epochs}), "
            "so more epochs are not what it lacks: a wider fold (--channel-multiple 32) or a smaller --fold")


def _choose(opts: FoldOptions, rows: list[dict], original: dict) -> tuple[dict | None, str]:
    limit = original["top1"] - opts.max_accuracy_drop / 100
    ok = [r for r in rows if r["top1"] >= limit - 1e-12]
    if not ok:
        best = max(rows, key=lambda r: r["top1"])
        return None, (f"no folded model is within {opts.max_accuracy_drop:g} points of the original's test top-1 "
                      f"({original['top1']:.2%}); the closest, fold {best['fold']}, reached {best['top1']:.2%}. "
                      f"Keep the original{_remedy(best)}")
    chosen = max(ok, key=lambda r: r["images_per_s"])
    gain = chosen["images_per_s"] / original["images_per_s"]
    why = (f"fold {chosen['fold']} is the fastest folded model within {opts.max_accuracy_drop:g} points "
           f"({chosen['top1']:.2%} vs {original['top1']:.2%}), {gain:.2f}x the original's images/s")
    if gain < 1:
        why += "; it is SLOWER than the original on this machine, so the original may be the better choice here"
    return chosen, why


def _notes(run: dict) -> dict:
    """What a stage's run.json says about how its training ended: still improving, distillation check."""
    s, d = run["summary"], (run["features"].get("distillation") or {})
    return {"epochs_run": s.get("epochs_run"), "best_epoch": s.get("best_epoch"),
            "still_improving": s.get("still_improving"), "distill_check": d.get("check")}


def _export(chosen: dict, out: Path) -> dict:
    """ONNX fp32 (and int8 when the chosen engine ran int8), each with its sidecar JSON."""
    from foldcnn.backends import check_onnx_parity, export_onnx
    from foldcnn.checkpoints import load_calibration, load_checkpoint

    ck = load_checkpoint(chosen["checkpoint"])
    files = {"onnx": str(out / "model.onnx")}
    export_onnx(ck.model, files["onnx"], class_names=ck.class_names)
    parity = check_onnx_parity(ck.model, files["onnx"])
    if chosen["precision"] == "int8":
        cal = load_calibration(chosen["checkpoint"])
        if cal is not None:
            files["onnx_int8"] = str(out / "model.int8.onnx")
            export_onnx(ck.model, files["onnx_int8"], class_names=ck.class_names, int8_calibration=cal)
    return {**files, "onnx_max_abs_diff": parity["max_abs_diff"]}


def run_fold(opts: FoldOptions, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
             log: Callable[[str], None] | None = None, command: list[str] | None = None,
             train_only: bool = False) -> dict:
    """Steps a-f (module docstring); returns the report written to ``out_dir/report.json``.

    ``train_only`` stops after steps a-c (returns ``{"stages": {fold: run manifest}}``); a later
    ``resume=True`` run reuses them and measures, e.g. when the machine is quiet."""
    from foldcnn.progress import progress_bar

    say = log or (lambda _msg: None)
    out = Path(out_dir)
    model_entry(opts.model)  # a path that does not import fails before any work
    check_data_spec(opts.data)
    if opts.weights is not None:
        read_state_dict(opts.weights)  # unreadable or pickled: fail before any work
    if out.exists() and any(out.iterdir()) and not resume:
        raise OutputExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    command = command or sys.argv
    runs: dict[int, dict] = {}
    stages = progress_bar(total=len(opts.folds) + 4, desc="foldcnn fold", unit="stage", disable=not progress)
    for f in (1, *opts.folds):
        runs[f] = _stage(opts, f, out, resume, progress, say, command)
        stages.update(1)
    if train_only:
        stages.close()
        return {"stages": runs}
    say("timing original and folded models in one interleaved sweep")
    speed = _throughput(opts, runs, progress)
    stages.update(1)
    ck = {f: str(out / (ORIGINAL if f == 1 else f"fold{f}") / "checkpoint") for f in runs}
    original = {"fold": 1, "checkpoint": ck[1], "top1": runs[1]["summary"]["test_top1"], **speed[1]}
    folded = [{"fold": f, "checkpoint": ck[f], "top1": runs[f]["summary"]["test_top1"],
               "top1_drop_points": round(100 * (original["top1"] - runs[f]["summary"]["test_top1"]), 3),
               "gain": round(speed[f]["images_per_s"] / original["images_per_s"], 3), **speed[f],
               **_notes(runs[f])} for f in opts.folds]
    chosen, why = _choose(opts, folded, original)
    say(why)
    target = chosen or original
    files = _export(target, out)
    stages.update(1)
    report = {
        "model": opts.model, "max_accuracy_drop": opts.max_accuracy_drop, "test_images": runs[1]["test_metrics"]["images"],
        "original": original, "folded": folded,
        "chosen": {"fold": target["fold"], "checkpoint": target["checkpoint"], **files,
                   "gain": round(target["images_per_s"] / original["images_per_s"], 3), "within_drop": chosen is not None,
                   "reason": why},
        "data": runs[1]["data"], "options": opts.to_dict(), "command": command,
        "versions": runs[1].get("versions"),
    }
    atomic_write(out / REPORT_JSON, json.dumps(report, indent=2).encode())
    atomic_write(out / REPORT_MD, render_report(report).encode())
    stages.update(1)
    stages.close()
    return report


def render_report(r: dict) -> str:
    """report.md: the tables and the commands that predict and serve with the chosen model."""
    o, c = r["original"], r["chosen"]
    lines = [f"# foldcnn fold: {r['model']}", "", f"Command: `{' '.join(r['command'])}`", "",
             f"Test split: {r['test_images']} images (seeded split, recorded in the stage run.json files). "
             f"Throughput: medians of interleaved trials on this machine, each model at its best engine and batch.",
             "", "| model | test top-1 | drop (points) | images/s | engine | batch | gain |",
             "|---|---|---|---|---|---|---|",
             f"| original (fold 1) | {o['top1']:.2%} | - | {o['images_per_s']:,.0f} | {o['engine']} | "
             f"{o['batch_size']} | 1.00x |"]
    for f in r["folded"]:
        lines.append(f"| fold {f['fold']} | {f['top1']:.2%} | {f['top1_drop_points']:.2f} | {f['images_per_s']:,.0f} | "
                     f"{f['engine']} | {f['batch_size']} | {f['gain']:.2f}x |")
    for f in r["folded"]:
        check, more = f.get("distill_check"), f.get("still_improving") or {}
        if check and not check["kept"]:
            lines.append(f"\nFold {f['fold']}: {check['reason']}.")
        if more.get("yes"):
            lines.append(f"\nFold {f['fold']} was still improving at its last epoch "
                         f"(+{more['val_top1_gain_points']:g} points of val top-1 over {more['over_epochs']} epochs).")
    onnx = c.get("onnx_int8") or c["onnx"]
    best = o if c["fold"] == 1 else next(f for f in r["folded"] if f["fold"] == c["fold"])
    engine = f"--backend {best['backend']} --precision {best['precision']}"
    if best["backend"] not in _SERVING_BACKENDS:  # an engine predict/serve do not take (yet): their default
        engine = f"--backend auto  # fastest here was {best['engine']}"
    lines += ["", f"**Chosen: fold {c['fold']}** ({c['gain']:.2f}x). {c['reason']}.", "",
              "Use it:", "", "```",
              f"foldcnn predict {c['checkpoint']} --input IMAGES_DIR --out predictions.csv {engine}",
              f"foldcnn predict {c['checkpoint']} --input IMAGES_DIR --out predictions/ --engine ray",
              f"foldcnn serve {c['checkpoint']} {engine}",
              f"foldcnn eval {c['checkpoint']} --data CLASS_FOLDERS",
              "```", "", f"ONNX: `{onnx}` (with its sidecar `{onnx}.json`), runnable with plain onnxruntime."]
    return "\n".join(lines) + "\n"


# Engines `foldcnn predict` and `foldcnn serve` take by name (cli/predict.py, cli/serve.py).
_SERVING_BACKENDS = ("eager", "compile", "ort", "cuda-graphs")
