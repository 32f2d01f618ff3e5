"""Regenerate docs/accuracy.md: every game task x fold, trained on the same data, test top-1.

    python experiments/accuracy_table.py --out runs/accuracy --jobs 2
    python experiments/accuracy_table.py --out runs/accuracy --report docs/accuracy.md   # table only

Each cell is one `foldcnn train` command (printed in the table), run as a subprocess with one
thread; `--jobs` runs that many at once. Finished runs (run.json present) are not re-run, so an
interrupted table resumes. The original (f=1) and the folded models of a task see the same
generated train/val/test images (same --data-seed); folded models get their own, longer budget
(DESIGN section 5: they converge more slowly).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GAME_TASKS = ("lol-gold-fraction", "lol-timer-minutes", "apex-squad-count", "sot-coin-count", "sot-timer",
              "lol-gold-int")
# Training images per task: lol-gold-int has 111 classes and needs more (docs/data.md).
TRAIN_SIZE = {"lol-gold-int": 20000}
BAR_POINTS = 1.0  # the parity bar: folded within 1.0 point of the original


def parse_epochs(text: str) -> dict[int, int]:
    pairs = (item.split(":") for item in text.split(","))
    return {int(f): int(e) for f, e in pairs}


def command(task: str, fold: int, args) -> list[str]:
    return ["foldcnn", "train", "--task", task, "--fold", str(fold), "--epochs", str(args.epochs[fold]),
            "--train-size", str(TRAIN_SIZE.get(task, args.train_size)), "--test-size", str(args.test_size),
            "--data-seed", "0", "--seed", "0", "--threads", "1", "--quiet",
            "--out", str(Path(args.out) / f"{task}-f{fold}")]


def run_one(cmd: list[str]) -> tuple[list[str], int, float]:
    t0 = time.perf_counter()
    exe = [sys.executable, "-m", "foldcnn", *cmd[1:]]
    proc = subprocess.run(exe, capture_output=True, text=True)
    if proc.returncode:
        print(f"FAILED ({proc.returncode}): {shlex.join(cmd)}\n{proc.stderr[-2000:]}", file=sys.stderr)
    else:
        print(f"done in {time.perf_counter() - t0:.0f} s: {proc.stdout.splitlines()[0]}", flush=True)
    return cmd, proc.returncode, time.perf_counter() - t0


def result(out: Path, task: str, fold: int) -> dict | None:
    path = out / f"{task}-f{fold}" / "run.json"
    if not path.exists():
        return None
    run = json.loads(path.read_text())
    return {"top1": run["summary"]["test_top1"], "seconds": run["summary"]["train_seconds"],
            "epochs": run["summary"]["epochs_run"], "best_epoch": run["summary"]["best_epoch"],
            "command": shlex.join(run["command"])}


def report(args) -> str:
    out = Path(args.out)
    lines = ["| task | f | test top-1 | vs f=1 (points) | within 1.0? | best epoch / run | training s | command |",
             "|---|---|---|---|---|---|---|---|"]
    for task in args.tasks:
        base = result(out, task, 1)
        for fold in args.folds:
            r = result(out, task, fold)
            if r is None:
                lines.append(f"| {task} | {fold} | not run | | | | | |")
                continue
            delta = "" if base is None or fold == 1 else f"{100 * (r['top1'] - base['top1']):+.1f}"
            ok = "" if not delta else ("yes" if float(delta) >= -BAR_POINTS else "**no**")
            lines.append(f"| {task} | {fold} | {100 * r['top1']:.1f}% | {delta} | {ok} | "
                         f"{r['best_epoch']} / {r['epochs']} | {r['seconds']:.0f} | `{r['command']}` |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/accuracy")
    p.add_argument("--tasks", nargs="+", default=list(GAME_TASKS))
    p.add_argument("--folds", nargs="+", type=int, default=[1, 2, 3, 4])
    p.add_argument("--epochs", type=parse_epochs, default=parse_epochs("1:30,2:45,3:60,4:60"),
                   help="epochs per fold, e.g. 1:30,2:45,3:60,4:60")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=5000)
    p.add_argument("--jobs", type=int, default=2, help="runs at once (each uses one thread)")
    p.add_argument("--report", help="only write the markdown table to this file (no training)")
    args = p.parse_args()
    if args.report:
        Path(args.report).write_text(report(args))
        print(report(args))
        return 0
    todo = [command(t, f, args) for t in args.tasks for f in args.folds if result(Path(args.out), t, f) is None]
    print(f"{len(todo)} runs to do, {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        failed = [c for c, rc, _ in pool.map(run_one, todo) if rc]
    print(report(args))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
