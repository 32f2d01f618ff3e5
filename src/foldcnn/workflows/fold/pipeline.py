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
import math
import sys
from pathlib import Path
from typing import Callable

from foldcnn.checkpoints import atomic_write, read_state_dict
from foldcnn.errors import OutputExistsError, UsageError
from foldcnn.models import create_model, model_entry
from foldcnn.train.metrics import weak_classes
from foldcnn.train.sources import check_data_spec
from foldcnn.workflows.fold.options import FoldOptions
from foldcnn.workflows.fold.report import render_report
from foldcnn.workflows.fold.space import DEFAULT_WIDTHS, Candidate
from foldcnn.workflows.fold.stages import ORIGINAL_STAGE, export_chosen, settle_precisions, time_builds, train_stage

__all__ = ["FoldOptions", "run_fold", "REPORT_JSON", "REPORT_MD"]

REPORT_JSON, REPORT_MD, FRONTIER_PNG = "report.json", "report.md", "frontier.png"
# report.json's layout; raised when a key changes meaning (2: search candidates, narrower peers; 3: options.model
# is the original's ModelSpec, holding kwargs, weights and channel_multiple).
REPORT_SCHEMA_VERSION = 3


def _builds(opts: FoldOptions, c: Candidate, kwargs: dict) -> bool:
    """Whether the model builds at this width (a narrower CNN may round a layer to 0 channels)."""
    try:
        create_model(opts.model.name, fold=c.fold, width_mult=c.width_mult, channel_multiple=c.channel_multiple, **kwargs)
    except UsageError:
        return False
    return True


def _throughput(opts: FoldOptions, runs: dict[int, dict], progress: bool) -> tuple[dict[int, dict], list[dict]]:
    """Best (engine, batch) per fold of the paper's widths, {fold: {"images_per_s", "engine", ...}},
    and of the narrower fold-1 CNNs (timed with random weights in the same sweep, never trained here)."""
    builds = [Candidate(f, math.sqrt(f), opts.model.channel_multiple if f > 1 else None) for f in (1, *opts.folds)]
    kwargs = dict(runs[1]["model_config"]["kwargs"])
    narrow = [c for c in (Candidate(1, w, opts.model.channel_multiple) for w in DEFAULT_WIDTHS if w < 1) if _builds(opts, c, kwargs)]
    best = time_builds(opts, builds + narrow, kwargs, progress)
    speed = {b.fold: {k: v for k, v in best[b.key].items() if k != "flops_per_image"} for b in builds}
    peers = [{"fold": 1, "width_mult": b.width_mult, "trained": False,
              "gain": round(best[b.key]["images_per_s"] / speed[1]["images_per_s"], 3), **best[b.key]} for b in narrow]
    return speed, peers


def _remedy(row: dict) -> str:
    """What the folded run measured about itself (run.json), as the advice's remedy."""
    gain, epochs = row.get("still_improving") or {}, row.get("epochs_run", 0)
    if gain.get("yes"):
        return (f"; fold {row['fold']} was still improving when it stopped (+{gain['val_top1_gain_points']:g} points "
                f"of val top-1 over its last {gain['over_epochs']} of {epochs} epochs): train it longer, e.g. "
                f"--epochs {2 * epochs} in a new --out")
    return (f"; fold {row['fold']} had stopped improving (best val at epoch {row.get('best_epoch')} of {epochs}), "
            "so more epochs are not what it lacks: a wider fold (--channel-multiple 32) or a smaller --fold")


def _notes(run: dict) -> dict:
    """What a stage's run.json says about how its training ended (still improving, distillation
    check) and which classes it reads far worse than the rest on the test split."""
    s, d = run["summary"], (run["features"].get("distillation") or {})
    return {"epochs_run": s.get("epochs_run"), "best_epoch": s.get("best_epoch"),
            "still_improving": s.get("still_improving"), "distill_check": d.get("check"),
            "weak_classes": weak_classes(run.get("test_metrics"))}


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


def _settle_precisions(opts: FoldOptions, original: dict, folded: list[dict], say) -> None:
    """Each model's engine checked against fp32 on the validation images (int8 or bf16 stands only
    where it answers as fp32 does, stages.settle_precision); the gains taken again."""
    from foldcnn.train.sources import load_splits

    if all(r["precision"] == "fp32" for r in (original, *folded)):
        return
    settle_precisions(original, folded, load_splits(opts.data).val.images, opts.train.threads, say)


def _check_inputs(opts: FoldOptions, out: Path, resume: bool, train_only: bool) -> None:
    """Everything that can fail before any work: the model's import, the data, the weights, --out."""
    model_entry(opts.model.name)  # a path that does not import fails before any work
    check_data_spec(opts.data)
    if opts.model.weights is not None:
        read_state_dict(opts.model.weights)  # unreadable or pickled: fail before any work
    if out.exists() and any(out.iterdir()) and not resume:
        raise OutputExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if opts.search and train_only:
        raise UsageError("--train-only does not apply to --search: the search times every candidate first and "
                         "trains only the fastest ones")


def run_fold(opts: FoldOptions, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
             log: Callable[[str], None] | None = None, command: list[str] | None = None,
             train_only: bool = False) -> dict:
    """Steps a-f (module docstring); returns the report written to ``out_dir/report.json``.

    ``train_only`` stops after steps a-c (returns ``{"stages": {fold: run manifest}}``); a later
    ``resume=True`` run reuses them and measures, e.g. when the machine is quiet."""
    from foldcnn.progress import progress_bar

    say = log or (lambda _msg: None)
    out = Path(out_dir)
    _check_inputs(opts, out, resume, train_only)
    out.mkdir(parents=True, exist_ok=True)
    command = command or sys.argv
    if opts.search:
        return _search_report(opts, out, resume, progress, say, command)
    runs: dict[int, dict] = {}
    stages = progress_bar(total=len(opts.folds) + 4, desc="foldcnn fold", unit="stage", disable=not progress)
    for f in (1, *opts.folds):
        runs[f] = train_stage(opts, f, out, resume, progress, say, command)
        stages.update(1)
    if train_only:
        stages.close()
        return {"stages": runs}
    say("timing original and folded models in one interleaved sweep")
    speed, narrower = _throughput(opts, runs, progress)
    stages.update(1)
    ck = {f: str(out / (ORIGINAL_STAGE if f == 1 else f"fold{f}") / "checkpoint") for f in runs}
    original = {"fold": 1, "checkpoint": ck[1], "top1": runs[1]["summary"]["test_top1"], **speed[1],
                "weak_classes": weak_classes(runs[1].get("test_metrics"))}
    folded = [{"fold": f, "checkpoint": ck[f], "top1": runs[f]["summary"]["test_top1"],
               "top1_drop_points": round(100 * (original["top1"] - runs[f]["summary"]["test_top1"]), 3),
               "gain": round(speed[f]["images_per_s"] / original["images_per_s"], 3), **speed[f],
               **_notes(runs[f])} for f in opts.folds]
    _settle_precisions(opts, original, folded, say)
    chosen, why = _choose(opts, folded, original)
    say(why)
    target = chosen or original
    files = export_chosen(target, out)
    stages.update(1)
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "model": opts.model.name, "max_accuracy_drop": opts.max_accuracy_drop, "test_images": runs[1]["test_metrics"]["images"],
        "original": original, "folded": folded, "narrower": narrower,
        "best_narrower_peer": max(narrower, key=lambda r: r["images_per_s"]) if narrower else None,
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


def _search_report(opts: FoldOptions, out: Path, resume: bool, progress: bool, say, command) -> dict:
    from foldcnn.workflows.fold.report import render_search_report, write_frontier
    from foldcnn.workflows.fold.search import chosen_summary, run_search

    result = run_search(opts, out, resume=resume, progress=progress, say=say, command=command)
    say(result["verdict"])
    files = export_chosen(result["chosen_row"], out)
    run = result["original_run"]
    report = {
        "schema_version": REPORT_SCHEMA_VERSION, "model": opts.model.name, "search": True, "max_accuracy_drop": opts.max_accuracy_drop,
        "budget_val_top1": result["budget_val_top1"], "test_images": run["test_metrics"]["images"],
        "verdict": result["verdict"], "candidates": result["candidates"],
        "chosen": chosen_summary(result, files), "cost": result["cost"],
        "data": run["data"], "options": opts.to_dict(), "command": command, "versions": run.get("versions"),
    }
    report["frontier_png"] = write_frontier(report, out / FRONTIER_PNG)
    atomic_write(out / REPORT_JSON, json.dumps(report, indent=2).encode())
    atomic_write(out / REPORT_MD, render_search_report(report).encode())
    return report
