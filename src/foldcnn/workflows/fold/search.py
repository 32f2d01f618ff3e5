"""`foldcnn fold --search`: the fastest build of the user's CNN on this machine that keeps the accuracy.

1. ``original/``: the original trained (or its weights evaluated), as without --search;
2. every candidate (fold x width multiplier x channel multiple, space.py) and the original timed
   with random weights in one interleaved sweep (every engine x precision here, best batch each),
   cached in ``search/timing.json``;
3. candidates faster than the original trained fastest first with the project's recipe
   (distillation from the original; fold-1 candidates with the f=4 budget), each in its own stage
   directory; a learning curve that cannot reach the budget is abandoned at a rung
   (``space.abandon_reason``, written to the stage's ``abandoned.json``);
4. the first candidate that meets the budget at full training is the fastest that does: the search
   stops and the slower ones stay untrained. Selection reads validation top-1 (and the validation
   fold-mate flip rate) only; the test top-1 each training run measured at its end goes to the
   report, never into a decision.

``resume=True`` reuses the timing, every finished or abandoned candidate, and continues a killed one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from foldcnn.checkpoints import CONFIG_FILE, atomic_write
from foldcnn.errors import UsageError
from foldcnn.models import create_model
from foldcnn.models.base import resolve_channel_multiple
from foldcnn.train.config import fit_budget
from foldcnn.train.loop import read_metrics
from foldcnn.train.metrics import weak_classes
from foldcnn.train.resume import TRAIN_STATE_FILE
from foldcnn.workflows.fold.options import FoldOptions
from foldcnn.workflows.fold.space import ORIGINAL, Candidate, abandon_reason, search_space
from foldcnn.workflows.fold.stages import ORIGINAL_STAGE, settle_precisions, stage_done, time_builds, train_stage

__all__ = ["run_search", "ABANDONED"]

ABANDONED = "abandoned.json"
TIMING = Path("search") / "timing.json"


class _Abandon(Exception):
    """Raised from the epoch hook to stop a candidate's training (its train_state.pt stays)."""


def check_builds(opts: FoldOptions, space: list[Candidate], kwargs: dict) -> None:
    """Build each candidate once (fresh weights): a width that rounds a layer to 0 channels fails now,
    and so does --invariant with a layer that fold-slot tying cannot reach (its slots could mix)."""
    from foldcnn.train.symmetry import untiable_layers

    for c in space:
        model = create_model(opts.model.name, fold=c.fold, width_mult=c.width_mult, channel_multiple=c.channel_multiple,
                             **kwargs)
        loose = untiable_layers(model) if opts.invariant and c.fold > 1 else {}
        if loose:
            name, why = next(iter(loose.items()))
            raise UsageError(f"--invariant needs every layer tied across fold slots, but {opts.model.name}'s layer "
                             f"{name!r} cannot be ({why}), so its answers could still depend on fold-mates")


def screening(opts: FoldOptions) -> FoldOptions:
    """The first sweep only orders the training (the confirming sweep gives the ratios the report
    states), so it is lighter: every engine, but only the largest of the batch sizes, half the
    trials (at least one) and half the seconds per timed block."""
    from dataclasses import replace

    return replace(opts, bench_batch_sizes=(max(opts.bench_batch_sizes),),
                   bench_trials=max(1, (opts.bench_trials + 1) // 2), bench_min_seconds=opts.bench_min_seconds / 2)


def _timing(opts: FoldOptions, builds: list[Candidate], kwargs: dict, out: Path, resume: bool, progress: bool,
            say) -> dict[tuple, dict]:
    path = out / TIMING
    if resume and path.is_file():
        saved = json.loads(path.read_text())
        if all(b.name in saved for b in builds):
            say(f"timing: done earlier, reusing {path}")
            return {b.key: saved[b.name] for b in builds}
    say(f"timing the original and {len(builds) - 1} candidates with random weights in one interleaved sweep")
    t0 = time.perf_counter()
    best = time_builds(screening(opts), builds, kwargs, progress)
    saved = {b.name: {**best[b.key], "sweep_seconds": round(time.perf_counter() - t0, 1)} for b in builds}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(saved, indent=2).encode())
    return {b.key: saved[b.name] for b in builds}


class _Search:
    """The state one search carries between candidates: the budget, the reference curve, the data."""

    def __init__(self, opts: FoldOptions, out: Path, resume: bool, progress: bool, say, command):
        self.opts, self.out, self.resume, self.progress, self.say, self.command = opts, out, resume, progress, say, command
        self._splits = None

    @property
    def splits(self):
        if self._splits is None:
            from foldcnn.train.sources import load_splits

            self._splits = load_splits(self.opts.data)
        return self._splits

    def validation(self, checkpoint: Path, fold: int) -> tuple[float, float | None]:
        """(val top-1, val fold-mate flip rate or None at fold 1) of a finished checkpoint."""
        from foldcnn.checkpoints import load_checkpoint
        from foldcnn.train.evaluation import evaluate, regrouping_metrics

        model = load_checkpoint(checkpoint).model.eval()
        top1 = evaluate(model, self.splits.val)["top1"]
        flips = regrouping_metrics(model, self.splits.val)["flip_rate"] if fold > 1 else None
        return top1, flips

    def train(self, c: Candidate, target: float, reference: list[float]) -> dict:
        """Train one candidate (or read it back); {"status", "val_top1", "test_top1", "flip_rate", ...}."""
        stage = self.out / c.name
        if (stage / ABANDONED).is_file():
            self.say(f"{c.name}: abandoned earlier, not retrained")
            return json.loads((stage / ABANDONED).read_text())
        if stage_done(stage):
            self.say(f"{c.name}: done earlier, reusing {stage / 'checkpoint'}")
            run = json.loads((stage / "run.json").read_text())
        else:
            run = self._run(c, stage, target, reference)
            if "abandoned" in run:
                return run["abandoned"]
        top1, flips = self.validation(stage / "checkpoint", c.fold)
        s = run["summary"]
        return {"status": "trained", "val_top1": top1, "test_top1": s["test_top1"], "flip_rate": flips,
                "epochs_trained": s["epochs_run"], "train_seconds": s["train_seconds"],
                "checkpoint": str(stage / "checkpoint"), "weak_classes": weak_classes(run.get("test_metrics"))}

    def judge(self, row: dict, c: Candidate, target: float, reference: list[float]) -> bool:
        """Train (or read back) ``c`` into ``row`` and set its status; whether it meets the budget."""
        row.update(self.train(c, target, reference))
        if row["status"] != "trained":
            return False
        flips_ok = self.opts.max_flip_rate is None or (row["flip_rate"] or 0.0) <= self.opts.max_flip_rate
        row["status"] = "meets" if row["val_top1"] >= target - 1e-12 and flips_ok else "misses"
        return row["status"] == "meets"

    def settle(self, rows: list[dict], chosen: dict) -> dict:
        """The confirmed, trained rows' engines checked against fp32 on the validation images
        (stages.settle_precision: int8 or bf16 stands only where it answers as fp32 does); their gains
        taken again from the original's settled speed. A chosen model that ends no faster than the
        original gives way to it. Returns the chosen row."""
        settle_precisions(rows[0], [r for r in rows[1:] if r.get("confirmed")], self.splits.val.images,
                          self.opts.train.threads, self.say)
        if chosen is not rows[0] and chosen["images_per_s"] <= rows[0]["images_per_s"]:
            self.say(f"{chosen['name']} is no faster than the original once both run at a precision that answers as "
                     "fp32 does: keeping the original")
            chosen["status"], rows[0]["status"], chosen = "meets", "chosen", rows[0]
        return chosen

    def _run(self, c: Candidate, stage: Path, target: float, reference: list[float]) -> dict:
        from foldcnn.train.run import RunOptions, run_training

        opts = self.opts
        cfg = opts.candidate_config(c.fold)
        continuing = self.resume and (stage / TRAIN_STATE_FILE).is_file()
        # the epochs the run will have: on a small set run_training raises them to the floor of steps,
        # and the rungs (and the distillation check's epoch) are fractions of those
        epochs = fit_budget(cfg, len(self.splits.train), c.fold)[0].epochs

        def check(_row: dict) -> None:
            reason = abandon_reason([r["val_top1"] for r in read_metrics(stage)], epochs, reference, target,
                                    opts.abandon_margin)
            if reason:
                raise _Abandon(reason)

        self.say(f"{c.name}: {'resuming' if continuing else 'training'} fold={c.fold} width x{c.width_mult:.3g} "
                 f"({epochs} epochs)")
        teacher = self.out / ORIGINAL_STAGE / "checkpoint" if opts.train.distill != "none" else None
        try:
            run = RunOptions(stage, teacher=teacher, resume=continuing, overwrite=self.resume and not continuing,
                             quiet=not self.progress, command=self.command, log=self.say, on_epoch=check)
            return run_training(opts.model_spec(c.fold, c.width_mult, c.channel_multiple), opts.data, cfg, run)
        except _Abandon as a:
            curve = read_metrics(stage)
            row = {"status": "abandoned", "reason": str(a), "val_top1": max(r["val_top1"] for r in curve),
                   "test_top1": None, "flip_rate": None, "epochs_trained": len(curve),
                   "train_seconds": round(sum(r["epoch_seconds"] for r in curve), 2), "checkpoint": None}
            atomic_write(stage / ABANDONED, json.dumps(row, indent=2).encode())
            self.say(f"{c.name}: abandoned: {a}")
            return {"abandoned": row}


def _confirm(opts: FoldOptions, rows: list[dict], chosen: dict, space: list[Candidate], kwargs: dict, out: Path,
             resume: bool, progress: bool, say) -> float:
    """Time the original, the chosen model, the paper's points and the fastest narrower CNN again, in
    one interleaved sweep with at least twice the trials: the screening sweep ordered the training,
    this one gives the ratios the report states (on a busy machine a 3-trial median can be far off).
    The confirmed rows' ``images_per_s`` and ``gain`` are replaced, the screening values kept beside.
    Each sweep is saved under the set it timed, so a resumed search replays the same decisions."""
    import hashlib
    from dataclasses import replace

    by_name = {c.name: c for c in [ORIGINAL, *space]}
    peer = narrow_reference(rows)
    picked = {r["name"]: r for r in [rows[0], chosen, *[r for r in rows if r["kind"] == "paper"],
                                     *([peer] if peer else [])]}
    path = out / "search" / f"confirm-{hashlib.sha1(' '.join(sorted(picked)).encode()).hexdigest()[:10]}.json"
    if resume and path.is_file():
        say(f"confirming sweep of {', '.join(picked)}: done earlier, reusing {path}")
        best, seconds = json.loads(path.read_text()), 0.0
    else:
        say(f"confirming the throughput of {', '.join(picked)} in a second interleaved sweep")
        t0 = time.perf_counter()
        again = replace(opts, bench_trials=max(5, 2 * opts.bench_trials),
                        bench_backends=opts.bench_backends or _contenders([picked[n] for n in picked]))
        timed = time_builds(again, [by_name[n] for n in picked], kwargs, progress)
        seconds = round(time.perf_counter() - t0, 1)
        best = {n: timed[by_name[n].key] for n in picked}
        atomic_write(path, json.dumps(best, indent=2).encode())
    base = best[ORIGINAL.name]["images_per_s"]
    for name, row in picked.items():
        t = best[name]
        for k in ("images_per_s", "gain", "engine"):  # the first sweep's, kept through later confirmations
            row.setdefault(f"screening_{k}", row[k])
        row.update({k: t[k] for k in ("images_per_s", "images_per_s_min", "images_per_s_max", "engine", "backend",
                                      "precision", "batch_size", "engines") if k in t},
                   gain=round(t["images_per_s"] / base, 3),
                   confirmed=True)
    return seconds


# Engines per build the confirming sweep times again: the fastest few of the first sweep (its ranking
# of engines is steadier than its ratios), and each build's fastest fp32 engine, which the
# precision check falls back to.
CONFIRM_ENGINES = 3


def _contenders(rows: list[dict]) -> tuple[tuple[str, str], ...] | None:
    """The (backend, precision) pairs the confirming sweep times: each row's CONFIRM_ENGINES fastest
    of the first sweep and its fastest fp32 one; None (every engine) when the first sweep kept no list."""
    pairs: dict[tuple[str, str], None] = {}
    for r in rows:
        engines = r.get("engines")
        if not engines:
            return None
        fp32 = [e for e in engines if e["precision"] == "fp32"][:1]
        for e in engines[:CONFIRM_ENGINES] + fp32:
            pairs[(e["backend"], e["precision"])] = None
    return tuple(pairs)


def _check_ray(address: str | None) -> None:
    """Ray importable and, when an address is given, reachable: both before the original trains."""
    import importlib.util

    from foldcnn.errors import MissingExtraError

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.tune") is None:
        raise MissingExtraError("--engine ray needs Ray Tune: pip install 'foldcnn[ray]' 'ray[tune]'")
    if address is not None:
        from foldcnn.scaleout.ray_engine import _check_reachable

        _check_reachable(address)


def _row(c: Candidate, timing: dict, original_speed: float) -> dict:
    return {"name": c.name, "kind": c.kind, "fold": c.fold, "width_mult": round(c.width_mult, 4),
            "channel_multiple": resolve_channel_multiple(c.channel_multiple) if c.width_mult != 1.0 else None,
            "flops_per_image": timing["flops_per_image"], "images_per_s": timing["images_per_s"],
            "images_per_s_min": timing.get("images_per_s_min"), "images_per_s_max": timing.get("images_per_s_max"),
            "gain": round(timing["images_per_s"] / original_speed, 3), "engine": timing["engine"],
            "backend": timing["backend"], "precision": timing["precision"], "batch_size": timing["batch_size"],
            "engines": timing.get("engines"), "val_top1": None, "test_top1": None, "flip_rate": None, "epochs_trained": 0, "train_seconds": 0.0,
            "checkpoint": None, "status": "untrained", "confirmed": False}


def run_search(opts: FoldOptions, out: Path, *, resume: bool, progress: bool, say, command) -> dict:
    """Steps 1-4 of the module docstring; returns the report's body (pipeline.run_fold writes it)."""
    t0 = time.perf_counter()
    space = search_space(opts.folds, opts.widths, opts.channel_multiples or (opts.model.channel_multiple,))
    if not space:
        raise UsageError("the search has no candidate besides the original; give --folds above 1 or --widths "
                         "other than 1")
    if "input_shape" in opts.model.kwargs or ":" not in opts.model.name:
        check_builds(opts, space, opts.model.kwargs)  # before the original trains
    _check_ray(opts.address) if opts.engine == "ray" else None
    original_run = train_stage(opts, 1, out, resume, progress, say, command)
    kwargs = dict(original_run["model_config"]["kwargs"])
    check_builds(opts, space, kwargs)
    timing = _timing(opts, [ORIGINAL, *space], kwargs, out, resume, progress, say)
    search = _Search(opts, out, resume, progress, say, command)
    reference = [r["val_top1"] for r in read_metrics(out / ORIGINAL_STAGE)]
    # measured as every candidate's is: the saved checkpoint on the validation split
    orig_val = search.validation(out / ORIGINAL_STAGE / "checkpoint", 1)[0]
    if not reference:  # the user's weights, evaluated only: no curve, so nothing is abandoned early
        say("the original was not trained here: no learning curve to abandon candidates against")
    target = orig_val - opts.max_accuracy_drop / 100
    o_speed = timing[ORIGINAL.key]["images_per_s"]
    original = {**_row(ORIGINAL, timing[ORIGINAL.key], o_speed), "val_top1": orig_val, "status": "meets",
                "test_top1": original_run["summary"]["test_top1"], "checkpoint": str(out / ORIGINAL_STAGE / "checkpoint"),
                "epochs_trained": original_run["summary"]["epochs_run"],
                "train_seconds": original_run["summary"]["train_seconds"],
                "weak_classes": weak_classes(original_run.get("test_metrics"))}
    order = sorted(space, key=lambda c: -timing[c.key]["images_per_s"])
    if opts.engine == "ray":  # every candidate faster than the original, as Tune trials side by side
        from foldcnn.workflows.fold.ray_search import train_on_ray

        train_on_ray(opts, [c for c in order if timing[c.key]["images_per_s"] > o_speed], out, address=opts.address,
                     progress=progress, command=command, abandoned_file=ABANDONED)
    rows, chosen = [original], None
    for c in order:
        row = _row(c, timing[c.key], o_speed)
        rows.append(row)
        if row["images_per_s"] <= o_speed or (chosen is not None and opts.engine == "local"):
            continue  # slower than the original (which meets by definition) or than the chosen one
        if search.judge(row, c, target, reference) and chosen is None:
            chosen = row
    chosen = chosen or original
    chosen["status"] = "chosen"
    chosen, confirmed = _confirm_choice(search, rows, chosen, space, kwargs, target, reference)
    for r in rows:
        if r["checkpoint"] is not None and not (Path(r["checkpoint"]) / CONFIG_FILE).is_file():
            raise RuntimeError(f"internal: {r['name']} names {r['checkpoint']}, which does not exist")
    cost = _cost(opts, rows, time.perf_counter() - t0, timing[ORIGINAL.key].get("sweep_seconds"), confirmed)
    return {"original": original, "candidates": rows, "chosen_row": chosen, "budget_val_top1": target,
            "cost": cost, "verdict": verdict(rows, chosen, opts), "original_run": original_run}


def _confirm_choice(search: _Search, rows: list[dict], chosen: dict, space: list[Candidate], kwargs: dict,
                    target: float, reference: list[float]) -> tuple[dict, float]:
    """Steps 7-8 of docs/search.md: the confirming sweep (an untrained candidate it puts ahead of the
    chosen one is trained too), then the precision check. Returns (chosen row, sweep seconds)."""
    opts, out, resume, progress, say = search.opts, search.out, search.resume, search.progress, search.say
    confirmed = _confirm(opts, rows, chosen, space, kwargs, out, resume, progress, say)
    by_name = {c.name: c for c in space}
    for _ in range(len(space)):
        ahead = [r for r in rows if r.get("confirmed") and r["status"] == "untrained"
                 and r["images_per_s"] > chosen["images_per_s"]]
        if not ahead:
            break
        row = max(ahead, key=lambda r: r["images_per_s"])
        say(f"{row['name']} is faster than {chosen['name']} in the confirming sweep: training it too")
        if search.judge(row, by_name[row["name"]], target, reference):
            chosen["status"], row["status"], chosen = "meets", "chosen", row
            confirmed += _confirm(opts, rows, chosen, space, kwargs, out, resume, progress, say)
    return search.settle(rows, chosen), confirmed


def _cost(opts: FoldOptions, rows: list[dict], seconds: float, timing_seconds, confirm_seconds) -> dict:
    """What the search cost, and one f=4 training to compare it with: the f=4 candidate's seconds,
    or without a full f=4 training, the f=4 budget at the abandoned f=4 runs' seconds per epoch."""
    trained = [r for r in rows[1:] if r["status"] in ("chosen", "meets", "misses")]
    cost = {"seconds": round(seconds, 1), "train_seconds": round(sum(r["train_seconds"] for r in rows), 1),
            "timing_seconds": timing_seconds, "confirm_seconds": confirm_seconds,
            "trained": len(trained), "abandoned": sum(r["status"] == "abandoned" for r in rows),
            "untrained": sum(r["status"] == "untrained" for r in rows)}
    f4 = [r["train_seconds"] for r in trained if r["fold"] == 4]
    cost["f4_train_seconds"] = f4[0] if f4 else None
    part = [r for r in rows if r["fold"] == 4 and r["status"] == "abandoned" and r["epochs_trained"]]
    cost["f4_train_seconds_estimated"] = None if f4 or not part else round(
        opts.candidate_config(4).epochs * sum(r["train_seconds"] for r in part) / sum(r["epochs_trained"] for r in part), 1)
    return cost


def verdict(rows: list[dict], chosen: dict, opts: FoldOptions) -> str:
    """The one sentence the report leads with."""
    o = rows[0]
    if chosen is o:
        faster = [r for r in rows[1:] if r["images_per_s"] > o["images_per_s"]]
        return ("keep the original: " + (f"none of the {len(faster)} faster candidates kept validation top-1 "
                f"within {opts.max_accuracy_drop:g} points" if faster else "no candidate is faster on this machine"))
    what = f"f={chosen['fold']} at width {chosen['width_mult']:.3g} is {chosen['gain']:.2f}x the original"
    if chosen["fold"] == 1:
        folded_faster = [r for r in rows if r["fold"] > 1 and r["images_per_s"] > chosen["images_per_s"]]
        why = ("no folded candidate is faster" if not folded_faster else
               f"the {len(folded_faster)} faster folded candidates missed the budget or were abandoned")
        return f"a narrower CNN wins: {what}; folding adds nothing for this model on this machine ({why})"
    if not any(r["kind"] == "narrower" for r in rows):
        return f"folding wins: {what} (no narrower CNN was in the search)"
    best = narrow_reference(rows)
    if best is None:
        return f"folding wins: {what}; every narrower CNN missed the budget or was abandoned"
    said = "" if best["status"] == "meets" else ", timed only: slower than the chosen model, so not trained"
    return (f"folding wins: {what} and {chosen['images_per_s'] / best['images_per_s']:.2f}x the best narrower CNN "
            f"(f=1 at width {best['width_mult']:.3g}{said})")


def narrow_reference(rows: list[dict]) -> dict | None:
    """The narrower CNN the verdict compares with: the fastest that met the budget, else the fastest
    left untrained (slower than the chosen model, accuracy unknown); None when every one missed."""
    narrow = [r for r in rows if r["kind"] == "narrower"]
    good = [r for r in narrow if r["status"] == "meets"]
    pool = good or [r for r in narrow if r["status"] == "untrained"]
    return max(pool, key=lambda r: r.get("screening_images_per_s", r["images_per_s"])) if pool else None


def chosen_summary(result: dict, files: dict) -> dict:
    """report.json's "chosen": the selected build, its files and its test top-1 (measured once)."""
    c = result["chosen_row"]
    return {"name": c["name"], "fold": c["fold"], "width_mult": c["width_mult"], "channel_multiple": c["channel_multiple"],
            "checkpoint": c["checkpoint"], **files, "top1": c["test_top1"], "val_top1": c["val_top1"],
            "images_per_s": c["images_per_s"], "engine": c["engine"], "precision": c["precision"],
            "gain": c["gain"], "within_drop": True, "reason": result["verdict"]}

