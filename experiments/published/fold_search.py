"""One `foldcnn fold --search` run, recorded as data: results/search/<name>.json.

Runs the search (the same code path as the CLI) on a folder of train/val/test class folders and
writes the report's candidates, choice, verdict and cost beside the command, date, CPU model,
commit and load average (the machine may be shared: the load says how much).

    foldcnn data game apex-squad-count --out data/apex --train-size 2000 --val-size 400 --test-size 400 --data-seed 0
    python experiments/published/fold_search.py apex-squad-count --data data/apex --out runs/search-apex \\
        --name apex-squad-count-2000 --threads 1
    python experiments/published/fold_search.py examples.my_cnn:MyCNN --model-kwargs '{"width": 16, "hidden": 64}' \\
        --data data/apex --out runs/search-mycnn-apex --name my-cnn-apex-squad-count-3500 --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

from foldcnn.bench.report import machine_info
from foldcnn.models.spec import ModelSpec
from foldcnn.train.config import TrainConfig
from foldcnn.train.sources import DataSpec
from foldcnn.workflows.fold import FoldOptions, run_fold

REPO = Path(__file__).resolve().parents[2]


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True, help="results/search/NAME.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--folds", default="1,2,4")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments of the model's builder (your own CNN)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    opts = FoldOptions(ModelSpec(args.model, kwargs=json.loads(args.model_kwargs)), DataSpec(data_dir=args.data), folds=tuple(int(f) for f in args.folds.split(",")),
                       train=TrainConfig(distill="kl", threads=args.threads), max_accuracy_drop=args.max_accuracy_drop,
                       search=True)
    report = run_fold(opts, args.out, resume=args.resume, progress=False, command=["python", *sys.argv],
                      log=lambda msg: print(f"fold_search: {msg}", file=sys.stderr, flush=True))
    keep = ("name", "kind", "fold", "width_mult", "channel_multiple", "flops_per_image", "images_per_s",
            "images_per_s_min", "images_per_s_max", "gain", "engine", "batch_size", "val_top1", "test_top1",
            "flip_rate", "epochs_trained", "train_seconds", "status", "reason", "agreement_checks", "confirmed",
            "screening_images_per_s")
    record = {
        "what": "foldcnn fold --search", "command": ["python", *sys.argv], "date": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(), "cpu": machine_info()["cpu_model"], "threads": args.threads,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "data": report["data"], "budget_val_top1": report["budget_val_top1"], "verdict": report["verdict"],
        "chosen": {k: report["chosen"].get(k) for k in ("name", "fold", "width_mult", "top1", "val_top1",
                                                        "images_per_s", "engine", "gain")},
        "cost": report["cost"],
        "candidates": [{k: r.get(k) for k in keep} for r in report["candidates"]],
    }
    path = REPO / "results" / "search" / f"{args.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{report['verdict']}\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
