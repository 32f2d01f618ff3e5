"""The pieces `foldcnn fold` and its search share: a trained stage, the interleaved timing of
builds, the engines a user allows, and the chosen model's export."""

from __future__ import annotations

import json
from pathlib import Path

from foldcnn.checkpoints import CONFIG_FILE
from foldcnn.errors import UsageError
from foldcnn.workflows.fold.options import FoldOptions
from foldcnn.workflows.fold.space import Candidate

__all__ = ["ORIGINAL_STAGE", "stage_done", "train_stage", "time_builds", "settle_precision", "settle_precisions",
           "restrict_precisions",
           "export_chosen"]

ORIGINAL_STAGE = "original"


def stage_done(stage: Path) -> bool:
    return (stage / "run.json").is_file() and (stage / "checkpoint" / CONFIG_FILE).is_file()


def train_stage(opts: FoldOptions, fold: int, out: Path, resume: bool, progress: bool, log, command) -> dict:
    """Train (or, with weights at fold 1, evaluate) one model; a finished stage is read back."""
    from foldcnn.train.distill_gate import resume_state
    from foldcnn.train.run import RunOptions, run_training

    stage = out / (ORIGINAL_STAGE if fold == 1 else f"fold{fold}")
    if stage_done(stage):
        log(f"{stage.name}: done earlier, reusing {stage / 'checkpoint'}")
        return json.loads((stage / "run.json").read_text())
    teacher = out / ORIGINAL_STAGE / "checkpoint" if fold > 1 and opts.train.distill != "none" else None
    continuing = resume and resume_state(stage).is_file()  # the run's state, or its distillation twin's
    log(f"{stage.name}: " + ("evaluating the given weights" if fold == 1 and opts.model.weights else
                             ("resuming" if continuing else "training") + f" fold={fold}"))
    run = RunOptions(stage, teacher=teacher, resume=continuing, quiet=not progress, command=command, log=log,
                     evaluate_only=fold == 1 and opts.model.weights is not None)
    return run_training(opts.model_spec(fold), opts.data, opts.train_config(fold, teacher is not None), run)


def time_builds(opts: FoldOptions, builds: list[Candidate], kwargs: dict, progress: bool) -> dict[tuple, dict]:
    """Best (engine, batch) of each build from one interleaved sweep with random weights:
    ``{candidate.key: {"images_per_s", "engine", "backend", "precision", "batch_size", "flops_per_image", ...}}``."""
    from foldcnn.backends import available_backends
    from foldcnn.bench.configs import make_configs
    from foldcnn.bench.sweep import run_sweep

    backends = opts.bench_backends or tuple(b for b in available_backends("cpu") if b[0] != "compile")
    backends = restrict_precisions(backends, opts.precisions)
    configs = [c for b in builds for c in make_configs([opts.model.name], [b.fold], opts.bench_batch_sizes, backends,
                                                       channel_multiples=[b.channel_multiple], model_kwargs=kwargs,
                                                       width_mults=[b.width_mult])]
    outcome = run_sweep(list(dict.fromkeys(configs)), trials=opts.bench_trials, min_seconds=opts.bench_min_seconds,
                        threads=opts.train.threads or None, seed=opts.train.seed, group_by=None, progress=progress)
    engines: dict[tuple, dict[str, dict]] = {}  # build -> engine -> its best batch
    for r in outcome.results:
        c, st = r.config, r.images_per_s
        wm = c.resolved_width_mult
        key, engine = (c.fold, round(wm, 6), None if wm == 1.0 else c.channel_multiple), f"{c.backend}/{c.precision}"
        mine = engines.setdefault(key, {})
        if engine not in mine or st.median > mine[engine]["images_per_s"]:
            mine[engine] = {"images_per_s": round(st.median, 1), "images_per_s_min": round(st.min, 1),
                            "images_per_s_max": round(st.max, 1), "engine": engine, "backend": c.backend,
                            "precision": c.precision, "batch_size": c.batch_size, "flops_per_image": r.flops_per_image}
    best: dict[tuple, dict] = {}
    for key, mine in engines.items():
        ranked = sorted(mine.values(), key=lambda e: -e["images_per_s"])
        best[key] = {**ranked[0], "engines": [{k: e[k] for k in ENGINE_KEYS} for e in ranked]}
    missing = [b.name for b in builds if b.key not in best]
    if missing:
        why = "; ".join(f"{c.label()}: {reason}" for c, reason in outcome.skipped[:3])
        raise UsageError(f"no engine could time {', '.join(missing)} here ({why})")
    return best


ENGINE_KEYS = ("engine", "backend", "precision", "batch_size", "images_per_s", "images_per_s_min", "images_per_s_max")


def settle_precision(row: dict, checkpoint: str | Path, images, threads: int | None, say) -> None:
    """Keep ``row``'s engine when its precision is fp32 or answers as fp32 does on at least
    MIN_AGREEMENT of ``images`` (validation images: a decision); otherwise take the fastest engine of
    the same build that does (fp32 always does). ``row["agreement_checks"]`` records each engine
    checked and its agreement; the row's speed fields become the kept engine's."""
    from foldcnn.backends.agreement import MIN_AGREEMENT, engine_agreement
    from foldcnn.checkpoints import load_checkpoint

    model, checks = None, []
    for e in row.get("engines") or [{k: row[k] for k in ENGINE_KEYS if k in row}]:
        if e["precision"] == "fp32":
            agree = 1.0
        else:
            model = model or load_checkpoint(checkpoint).model.eval()
            agree = engine_agreement(model, images, e["backend"], e["precision"], threads=threads)
        checks.append({"engine": e["engine"], "agreement": round(agree, 4)})
        if agree >= MIN_AGREEMENT:
            if e["engine"] != row["engine"]:
                say(f"{row.get('name', 'fold ' + str(row['fold']))}: {row['engine']} agrees with fp32 on only "
                    f"{checks[0]['agreement']:.1%} of the validation images (< {MIN_AGREEMENT:.0%}); "
                    f"its speed is taken on {e['engine']}")
            row.update({k: e[k] for k in ENGINE_KEYS if k in e})
            break
    else:
        say(f"{row.get('name', 'fold ' + str(row['fold']))}: no engine allowed here agrees with fp32 on "
            f"{MIN_AGREEMENT:.0%} of the validation images; its speed stays {row['engine']}'s")
    row["agreement_checks"] = checks


def settle_precisions(original: dict, rows: list[dict], images, threads: int | None, say) -> None:
    """settle_precision for the original and each row that names a trained checkpoint; then every
    row's gain taken again from the original's settled speed."""
    for r in (original, *rows):
        if r.get("checkpoint") is not None:
            settle_precision(r, r["checkpoint"], images, threads, say)
    for r in rows:
        r["gain"] = round(r["images_per_s"] / original["images_per_s"], 3)


def restrict_precisions(backends, precisions: tuple[str, ...] | None) -> tuple[tuple[str, str], ...]:
    """The (engine, precision) pairs whose precision is allowed; none left is the user's error."""
    kept = tuple(b for b in backends if precisions is None or b[1] in precisions)
    if not kept:
        raise UsageError(f"no engine to time at precision {','.join(precisions)}: the engines are "
                         f"{', '.join('/'.join(b) for b in backends)}")
    return kept


def export_chosen(chosen: dict, out: Path) -> dict:
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
