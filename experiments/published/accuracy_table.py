"""Regenerate docs/accuracy.md: every game task x fold, trained on the same data, test top-1.

    python experiments/published/accuracy_table.py --out runs/accuracy --jobs 2
    python experiments/published/accuracy_table.py --out runs/accuracy --report docs/accuracy.md   # table only

Each cell is one `foldcnn train` command (printed in the table), run as a subprocess with one
thread; `--jobs` runs that many at once. Finished runs (run.json present) are not re-run, so an
interrupted table resumes. The original (f=1) and the folded models of a task see the same
generated train/val/test images (same --data-seed); folded models get their own, longer budget
(docs/design.md, "Training recipe": they converge more slowly) and distill from their task's original (KL,
`--distill`). The NoScope video row renders its video once with
`foldcnn data video` and trains on it with `--data`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from foldcnn.train.config import recommended_budget

GAME_TASKS = ("lol-gold-fraction", "lol-timer-minutes", "apex-squad-count", "sot-coin-count", "sot-timer",
              "lol-gold-int")
# Training images per task (--train-size overrides): 8,000 by default; the two tasks with the most
# classes get more (commit 5e0618b, docs/accuracy.md): lol-timer-minutes (62 classes) 20,000, on which
# the original gains 2.5 points over 8,000; lol-gold-int (111 classes) 40,000 (+1.15 over 20,000).
DEFAULT_TRAIN_SIZE = 8000
TRAIN_SIZE = {"lol-gold-int": 40000, "lol-timer-minutes": 20000}
# Extra f=4 rows with widths rounded up to a multiple of 32 instead of 8 (--channel-multiple 32):
# the last conv gets 32 channels, 8 per image as in the original, where the default gives 16 (4
# per image); +5% FLOPs per image (`foldcnn analyze lol-gold-int --folds 4 --channel-multiple 32`).
# For the two tasks with the most classes, where the default widths fall short (docs/accuracy.md).
WIDE_ROWS = {"lol-timer-minutes": 32, "lol-gold-int": 32}
BAR_POINTS = 1.0  # the parity bar: folded within 1.0 point of the original
# The decay of the video rows and of game folds --weight-decay leaves out. Every command passes
# --weight-decay except where it is 1e-5 and that is also foldcnn train's default for the fold (f=1,
# f=2): those rows were recorded without it, and foldcnn train defaults to 0.05 from f=3.
DEFAULT_DECAY = 1e-5


def parse_per_fold(text: str, kind=float) -> dict:
    """"1:60,4:200" -> {1: 60, 4: 200} (values converted with ``kind``)."""
    pairs = (item.split(":") for item in text.split(","))
    return {int(f): kind(v) for f, v in pairs}


def parse_epochs(text: str) -> dict[int, int]:
    return parse_per_fold(text, int)


# AdamW weight decay per fold. f=3 and f=4 fit their training images but generalize worse than
# the original; decay 0.05 took apex-squad-count f=4 from 97.67% to 98.20% (docs/accuracy.md).
# f=1 and f=2 keep foldcnn's default (1e-5), the setting their rows were measured with.
WEIGHT_DECAY = "1:1e-5,2:1e-5,3:0.05,4:0.05"


# NoScope-style video rows: (zoo model, `foldcnn data video` arguments). The video is rendered once
# into OUT/data/<row> and split 60/20/20 in time with 30-frame gaps (docs/design.md, "Data tasks and classes").
# 18,000 frames (10 minutes at 30 fps) read at every 3rd frame: as many training frames as a
# 6,000-frame video, but three times as many object passes, so the test stretch holds about 17
# cars instead of 6 and one hard car cannot move its accuracy by 7 points (it did; docs/accuracy.md).
# Its epochs per fold are its own: a NoScope epoch costs about 5x a game epoch here.
VIDEO_TASKS = {"noscope-car": ("noscope-roundabout", ["--object", "car", "--frames", "18000", "--data-seed", "5"])}
VIDEO_EPOCHS = {"noscope-car": {1: 40, 4: 60}}  # the issue asks for f=4 on the video
VIDEO_GAP = 30
VIDEO_STRIDE = 3


def video_dir(task: str, args) -> Path:
    return Path(args.out) / "data" / task


def prepare_video(task: str, args) -> None:
    """Render the row's video (once) with `foldcnn data video`."""
    out = video_dir(task, args)
    if (out / "video.mp4").exists():
        return
    exe = [sys.executable, "-m", "foldcnn", "data", "video", "--out", str(out), *VIDEO_TASKS[task][1], "--quiet"]
    subprocess.run(exe, check=True)


def run_name(task: str, fold: int, multiple: int | None = None) -> str:
    return f"{task}-f{fold}" + (f"-cm{multiple}" if multiple else "")


def command(task: str, fold: int, args, multiple: int | None = None) -> list[str]:
    if task in VIDEO_TASKS:
        source = ["--data", str(video_dir(task, args)), "--model", VIDEO_TASKS[task][0],
                  "--video-gap", str(VIDEO_GAP), "--video-stride", str(VIDEO_STRIDE)]
    else:
        source = ["--task", task, "--train-size", str(args.train_size or TRAIN_SIZE.get(task, DEFAULT_TRAIN_SIZE)),
                  "--test-size", str(args.test_size), "--data-seed", "0"]
    extra = []
    if fold > 1 and args.distill != "none":  # the row's own original is the teacher
        extra = ["--teacher", str(Path(args.out) / run_name(task, 1) / "checkpoint"), "--distill", args.distill]
    epochs = VIDEO_EPOCHS[task][fold] if task in VIDEO_TASKS else args.epochs[fold]
    decay = DEFAULT_DECAY if task in VIDEO_TASKS else args.weight_decay.get(fold, DEFAULT_DECAY)
    if not decay == DEFAULT_DECAY == recommended_budget(fold)["weight_decay"]:  # f=1 and f=2 at 1e-5 omit it
        extra += ["--weight-decay", f"{decay:g}"]
    if multiple:
        extra += ["--channel-multiple", str(multiple)]
    return ["foldcnn", "train", *source, "--fold", str(fold), "--epochs", str(epochs), *extra,
            "--seed", "0", "--threads", "1", "--quiet", "--out", str(Path(args.out) / run_name(task, fold, multiple))]


def run_one(cmd: list[str]) -> tuple[list[str], int, float]:
    t0 = time.perf_counter()
    exe = [sys.executable, "-m", "foldcnn", *cmd[1:]]
    proc = subprocess.run(exe, capture_output=True, text=True)
    if proc.returncode:
        print(f"FAILED ({proc.returncode}): {shlex.join(cmd)}\n{proc.stderr[-2000:]}", file=sys.stderr)
    else:
        print(f"done in {time.perf_counter() - t0:.0f} s: {proc.stdout.splitlines()[0]}", flush=True)
    return cmd, proc.returncode, time.perf_counter() - t0


def result(out: Path, task: str, fold: int, multiple: int | None = None) -> dict | None:
    path = out / run_name(task, fold, multiple) / "run.json"
    if not path.exists():
        return None
    run = json.loads(path.read_text())
    return {"top1": run["summary"]["test_top1"], "seconds": run["summary"]["train_seconds"],
            "epochs": run["summary"]["epochs_run"], "best_epoch": run["summary"]["best_epoch"],
            "command": shlex.join(run["command"])}


def cells_of(task: str, args) -> list[tuple[str, int, int | None]]:
    """(task, fold, channel multiple or None for the default widths) of every row of the task."""
    folds = [f for f in args.folds if task not in VIDEO_TASKS or f in VIDEO_EPOCHS[task]]
    wide = [(task, 4, WIDE_ROWS[task])] if task in WIDE_ROWS and 4 in folds and not args.no_wide else []
    return [(task, f, None) for f in folds] + wide


def report(args) -> str:
    out = Path(args.out)
    lines = ["| task | f | test top-1 | vs f=1 (points) | within 1.0? | best epoch / run | training s | command |",
             "|---|---|---|---|---|---|---|---|"]
    for task in args.tasks:
        base = result(out, task, 1)
        for _, fold, multiple in cells_of(task, args):
            r = result(out, task, fold, multiple)
            label = f"{fold} (width multiple {multiple})" if multiple else str(fold)
            if r is None:
                lines.append(f"| {task} | {label} | not run | | | | | |")
                continue
            gap = None if base is None or fold == 1 else 100 * (r["top1"] - base["top1"])
            delta = "" if gap is None else f"{gap:+.2f}"
            ok = "" if gap is None else ("yes" if gap >= -BAR_POINTS - 1e-9 else "**no**")  # exact, not rounded
            lines.append(f"| {task} | {label} | {100 * r['top1']:.2f}% | {delta} | {ok} | "
                         f"{r['best_epoch']} / {r['epochs']} | {r['seconds']:.0f} | `{r['command']}` |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/accuracy")
    p.add_argument("--tasks", nargs="+", default=[*GAME_TASKS, *VIDEO_TASKS],
                   help=f"game tasks and video rows ({', '.join(VIDEO_TASKS)})")
    p.add_argument("--folds", nargs="+", type=int, default=[1, 2, 3, 4])
    p.add_argument("--epochs", type=parse_epochs, default=parse_epochs("1:60,2:100,3:100,4:200"),
                   help="epochs per fold, e.g. 1:60,2:100,3:100,4:200")
    p.add_argument("--weight-decay", type=parse_per_fold, default=parse_per_fold(WEIGHT_DECAY),
                   help=f"AdamW weight decay per fold for the game rows (default {WEIGHT_DECAY})")
    p.add_argument("--train-size", type=int, default=None,
                   help=f"training images for every game task (default {DEFAULT_TRAIN_SIZE:,}, and "
                        + ", ".join(f"{n:,} for {t}" for t, n in TRAIN_SIZE.items()) + ")")
    p.add_argument("--test-size", type=int, default=4000)
    p.add_argument("--distill", choices=("kl", "mse", "none"), default="kl",
                   help="folded rows distill from the row's f=1 checkpoint (trained first)")
    p.add_argument("--no-wide", action="store_true",
                   help="leave out the f=4 rows with widths rounded to a multiple of 32 ("
                        + ", ".join(WIDE_ROWS) + ")")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (each uses one thread)")
    p.add_argument("--report", help="only write the markdown table to this file (no training)")
    args = p.parse_args()
    if args.report:
        Path(args.report).write_text(report(args))
        print(report(args))
        return 0
    for task in args.tasks:
        if task in VIDEO_TASKS:
            prepare_video(task, args)
    # the original of every task first, so a partial table already has its baselines
    cells = sorted((c for t in args.tasks for c in cells_of(t, args)),
                   key=lambda c: (c[1] != 1, c[0] == "lol-gold-int"))
    todo = [c for c in cells if result(Path(args.out), *c) is None]
    print(f"{len(todo)} runs to do, {args.jobs} at a time", flush=True)
    originals = {t: threading.Event() for t in args.tasks}
    for t in args.tasks:
        if result(Path(args.out), t, 1) is not None or 1 not in args.folds:
            originals[t].set()

    def run_cell(cell):
        task, fold, multiple = cell
        if fold > 1 and args.distill != "none":
            originals[task].wait()  # the teacher must be trained first
        try:
            return run_one(command(task, fold, args, multiple))
        finally:
            if fold == 1:
                originals[task].set()

    with ThreadPoolExecutor(args.jobs) as pool:
        failed = [c for c, rc, _ in pool.map(run_cell, todo) if rc]
    print(report(args))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
