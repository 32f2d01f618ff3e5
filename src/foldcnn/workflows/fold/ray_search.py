"""`foldcnn fold --search --engine ray`: the candidates train as Ray Tune trials under its ASHA scheduler.

One trial per candidate (faster than the original, not finished earlier), the same recipe and
stage directories as the one-machine search; each trial reports its validation top-1 after every
epoch and ASHA (asynchronous successive halving: rungs from 1/4 of the shortest budget, halving)
stops the trials in the lower half at a rung. A stopped trial is recorded as abandoned; the
choice among the finished ones is the one-machine search's (fastest within the budget on
validation). Ray is imported here only; a local cluster is started and stopped when no address
is given.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from foldcnn.checkpoints import atomic_write
from foldcnn.train.loop import read_metrics
from foldcnn.workflows.fold.options import FoldOptions
from foldcnn.workflows.fold.space import Candidate
from foldcnn.workflows.fold.stages import ORIGINAL_STAGE, stage_done

__all__ = ["train_on_ray"]


def _trial(config: dict) -> None:
    """One candidate's training inside a Ray worker; every epoch's validation top-1 goes to Tune."""
    from ray import tune

    from foldcnn.train.run import RunOptions, run_training

    opts: FoldOptions = config["opts"]
    c = Candidate(**config["candidate"])
    out = Path(config["out"])
    teacher = out / ORIGINAL_STAGE / "checkpoint" if opts.train.distill != "none" else None
    run = RunOptions(out / c.name, teacher=teacher, overwrite=True, quiet=True, command=config["command"],
                     on_epoch=lambda row: tune.report({"val_top1": row["val_top1"], "epoch": row["epoch"]}))
    run_training(opts.model_spec(c.fold, c.width_mult, c.channel_multiple), opts.data,
                 opts.candidate_config(c.fold), run)


def train_on_ray(opts: FoldOptions, todo: list[Candidate], out: Path, *, address: str | None, progress: bool,
                 command: list[str], abandoned_file: str) -> None:
    """Train ``todo`` as Tune trials; a trial ASHA stopped gets ``abandoned_file`` in its stage."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from foldcnn.scaleout.ray_engine import _cluster

    todo = [c for c in todo if not stage_done(out / c.name) and not (out / c.name / abandoned_file).is_file()]
    if not todo:
        return
    epochs = {c.name: opts.candidate_config(c.fold).epochs for c in todo}
    grace = max(1, math.ceil(min(epochs.values()) / 4))
    scheduler = ASHAScheduler(metric="val_top1", mode="max", time_attr="training_iteration",
                              max_t=max(epochs.values()), grace_period=grace, reduction_factor=2)
    space = {"candidate": tune.grid_search([asdict(c) for c in todo]), "opts": opts, "out": str(out.resolve()),
             "command": command}
    with _cluster(address, progress):
        tuner = tune.Tuner(tune.with_resources(_trial, {"cpu": max(1, opts.train.threads)}), param_space=space,
                           tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1),
                           run_config=tune.RunConfig(storage_path=str((out / "search" / "ray").resolve()),
                                                     name="candidates", verbose=1 if progress else 0))
        results = tuner.fit()
    for r in results:
        if r.error is not None:
            raise r.error
    for c in todo:
        stage = out / c.name
        if stage_done(stage):
            continue
        curve = read_metrics(stage)
        row = {"status": "abandoned", "val_top1": max(x["val_top1"] for x in curve), "test_top1": None,
               "flip_rate": None, "epochs_trained": len(curve), "checkpoint": None,
               "train_seconds": round(sum(x["epoch_seconds"] for x in curve), 2),
               "reason": f"stopped by Ray Tune's ASHA scheduler after epoch {len(curve)} of {epochs[c.name]}: its "
                         f"validation top-1 ({max(x['val_top1'] for x in curve):.2%}) ranked in the lower half of "
                         "the trials at a rung"}
        atomic_write(stage / abandoned_file, json.dumps(row, indent=2).encode())
