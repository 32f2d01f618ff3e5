"""How accurate is the paper's scaled baseline? Train `<task>-scaled` like the original and compare.

    python experiments/published/accuracy_table.py --out runs/accuracy --folds 1      # the originals, if not there
    python experiments/published/baseline_accuracy.py --out runs/baseline --originals runs/accuracy --jobs 2

The baseline (docs/design.md, "The paper's models") is the game CNN one EfficientNet compound-scaling step down:
widths /1.1, depth /1.1, input resolution /1.15. It is a throughput peer in `foldcnn bench`; this
script measures what it costs in accuracy. For each task it writes the accuracy table's data
(same sizes, data seed 0) as PNG folders with `foldcnn data game`, trains `<task>-scaled` on them
with the images resized to the baseline's input size (`--input-size`) and the original's f=1
recipe (60 epochs, decay 1e-5, seed 0, one thread), then evaluates the task's original and folded
f=4 checkpoints from the accuracy table on the same test folder with `foldcnn eval`, so all three
numbers come from the same 4,000 images. `foldcnn data game` draws the same images as
`foldcnn train --task` for the same seed and sizes, so these are the accuracy table's own train,
validation and test images, and the originals' numbers here equal docs/accuracy.md's.
Finished runs (run.json present) are not re-run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from accuracy_table import DEFAULT_TRAIN_SIZE, GAME_TASKS, TRAIN_SIZE, run_one

from foldcnn.models import model_entry

EPOCHS = 60  # the original's f=1 budget in the accuracy table
VAL_SIZE, TEST_SIZE = 1000, 4000  # foldcnn train's default validation size; the table's test size


def data_dir(out: Path, task: str) -> Path:
    return out / "data" / task


def write_data(out: Path, task: str) -> None:
    d = data_dir(out, task)
    if (d / "manifest.json").exists():
        return
    size = TRAIN_SIZE.get(task, DEFAULT_TRAIN_SIZE)
    subprocess.run([sys.executable, "-m", "foldcnn", "data", "game", task, "--out", str(d), "--train-size", str(size),
                    "--val-size", str(VAL_SIZE), "--test-size", str(TEST_SIZE), "--data-seed", "0", "--quiet"], check=True)


def train_command(out: Path, task: str) -> list[str]:
    _, h, w = model_entry(f"{task}-scaled").input_shape
    return ["foldcnn", "train", "--data", str(data_dir(out, task)), "--model", f"{task}-scaled",
            "--input-size", f"{h}x{w}", "--epochs", str(EPOCHS), "--weight-decay", "1e-5", "--seed", "0",
            "--threads", "1", "--quiet", "--out", str(out / f"{task}-scaled")]


def evaluate(checkpoint: Path, test_dir: Path) -> float:
    proc = subprocess.run([sys.executable, "-m", "foldcnn", "eval", str(checkpoint), "--data", str(test_dir), "--json"],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)["top1"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/baseline")
    p.add_argument("--originals", default="runs/accuracy", help="the accuracy table's runs (<task>-f1/checkpoint)")
    p.add_argument("--tasks", nargs="+", default=list(GAME_TASKS))
    p.add_argument("--jobs", type=int, default=2, help="runs at once (each uses one thread)")
    a = p.parse_args()
    out = Path(a.out)
    missing = [t for t in a.tasks if not (Path(a.originals) / f"{t}-f1" / "checkpoint").exists()]
    if missing:
        p.error(f"no original checkpoint for {', '.join(missing)} under {a.originals}; run the accuracy table's "
                "f=1 rows first (command in this script's docstring)")
    with ThreadPoolExecutor(a.jobs) as pool:
        list(pool.map(lambda t: write_data(out, t), a.tasks))
        todo = [train_command(out, t) for t in a.tasks if not (out / f"{t}-scaled" / "run.json").exists()]
        print(f"{len(todo)} baseline runs to do, {a.jobs} at a time", flush=True)
        failed = [c for c, rc, _ in pool.map(run_one, todo) if rc]
    print("| task | original f=1 | scaled baseline (vs original) | folded f=4 (vs original) | baseline input | "
          "baseline command |")
    print("|---|---|---|---|---|---|")
    for task in a.tasks:
        run_json = out / f"{task}-scaled" / "run.json"
        if not run_json.exists():
            print(f"| {task} | | not run | | | |")
            continue
        run = json.loads(run_json.read_text())
        test = data_dir(out, task) / "test"
        original = evaluate(Path(a.originals) / f"{task}-f1" / "checkpoint", test)
        baseline = run["summary"]["test_top1"]
        folded_ck = Path(a.originals) / f"{task}-f4" / "checkpoint"  # the accuracy table's f=4, default widths
        folded = evaluate(folded_ck, test) if folded_ck.exists() else None
        folded_cell = "not run" if folded is None else f"{100 * folded:.2f}% ({100 * (folded - original):+.2f})"
        _, h, w = model_entry(f"{task}-scaled").input_shape
        print(f"| {task} | {100 * original:.2f}% | {100 * baseline:.2f}% ({100 * (baseline - original):+.2f}) | "
              f"{folded_cell} | {h}x{w} | `{shlex.join(run['command'])}` |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
