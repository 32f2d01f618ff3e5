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
from pathlib import Path
from typing import Callable

from foldcnn.checkpoints import CONFIG_FILE, atomic_write, read_state_dict
from foldcnn.errors import OutputExistsError, UsageError
from foldcnn.models import model_entry
from foldcnn.train.resume import TRAIN_STATE_FILE
from foldcnn.train.sources import check_data_spec
from foldcnn.workflows.fold.options import FoldOptions
from foldcnn.workflows.fold.report import render_report

__all__ = ["FoldOptions", "run_fold", "REPORT_JSON", "REPORT_MD"]

REPORT_JSON, REPORT_MD = "report.json", "report.md"
ORIGINAL = "original"


def _done(stage: Path) -> bool:
    return (stage / "run.json").is_file() and (stage / "checkpoint" / CONFIG_FILE).is_file()


def _stage(opts: FoldOptions, fold: int, out: Path, resume: bool, progress: bool, log, command) -> dict:
    """Train (or, with weights at fold 1, evaluate) one model; a finished stage is read back."""
    from foldcnn.train.run import run_training

    stage = out / (ORIGINAL if fold == 1 else f"fold{fold}")
    if _done(stage):
        log(f"{stage.name}: done earlier, reusing {stage / 'checkpoint'}")
        return json.loads((stage / "run.json").read_text())
    teacher = out / ORIGINAL / "checkpoint" if fold > 1 and opts.distill != "none" else None
    continuing = resume and (stage / TRAIN_STATE_FILE).is_file()
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
    backends = restrict_precisions(backends, opts.precisions)
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


def restrict_precisions(backends, precisions: tuple[str, ...] | None) -> tuple[tuple[str, str], ...]:
    """The (engine, precision) pairs whose precision is allowed; none left is the user's error."""
    kept = tuple(b for b in backends if precisions is None or b[1] in precisions)
    if not kept:
        raise UsageError(f"no engine to time at precision {','.join(precisions)}: the engines are "
                         f"{', '.join('/'.join(b) for b in backends)}")
    return kept


def _choose(opts: FoldOptions, rows: list[dict], original: dict) -> tuple[dict | None, str]:
    limit = original["top1"] - opts.max_accuracy_drop / 100
    ok = [r for r in rows if r["top1"] >= limit - 1e-12]
    if not ok:
        best = max(rows, key=lambda r: r["top1"])
        return None, (f"no folded model is within {opts.max_accuracy_drop:g} points of the original's test top-1 "
                      f"({original['top1']:.2%}); the closest, fold {best['fold']}, reached {best['top1']:.2%}. "
                      "Keep the original, or train longer (--epochs) and rerun with --resume")
    chosen = max(ok, key=lambda r: r["images_per_s"])
    gain = chosen["images_per_s"] / original["images_per_s"]
    why = (f"fold {chosen['fold']} is the fastest folded model within {opts.max_accuracy_drop:g} points "
           f"({chosen['top1']:.2%} vs {original['top1']:.2%}), {gain:.2f}x the original's images/s")
    if gain < 1:
        why += "; it is SLOWER than the original on this machine, so the original may be the better choice here"
    return chosen, why


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
               "gain": round(speed[f]["images_per_s"] / original["images_per_s"], 3), **speed[f]}
              for f in opts.folds]
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
