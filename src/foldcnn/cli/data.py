"""`foldcnn data game` and `foldcnn data video`."""

from __future__ import annotations

import argparse
import sys

from foldcnn.cli.common import CLIError, parse_size
from foldcnn.progress import progress_bar

# -------------------------------------------------------------------------------------- data
# Each `foldcnn data KIND` subcommand adds itself to this list (a function taking the
# sub-subparsers object), so generators and readers stay in their own sections below.
_DATA_SUBCOMMANDS: list = []


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="generate synthetic data sets (game text, NoScope-style video)")
    data_sub = p.add_subparsers(dest="data_command", metavar="KIND", required=True)
    for add in _DATA_SUBCOMMANDS:
        add(data_sub)


# ------------------------------------------------------------------------------ data game
def _cmd_data_game(args: argparse.Namespace) -> int:
    import os
    import shlex

    from foldcnn.data.game_export import write_game_text
    from foldcnn.data.game_tasks import list_game_tasks

    tasks = list_game_tasks() if args.task == "all" else [args.task]
    counts = {"train": args.train_size, "val": args.val_size, "test": args.test_size}
    if min(counts.values()) < 0 or args.workers < 1:
        raise CLIError("--train-size/--val-size/--test-size must be >= 0 and --workers >= 1")
    if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:
        raise CLIError(f"{args.out} is not empty; choose an empty directory or pass --overwrite")
    # the command that reproduces the data (--workers and --overwrite do not change a byte)
    command = shlex.join(["foldcnn", "data", "game", args.task, "--out", args.out,
                          "--train-size", str(args.train_size), "--val-size", str(args.val_size),
                          "--test-size", str(args.test_size), "--data-seed", str(args.data_seed)])
    rows = []
    with progress_bar(total=sum(counts.values()) * len(tasks), unit="img", file=sys.stderr,
                      disable=args.quiet, desc="game text") as bar:
        for task in tasks:
            root = args.out if args.task != "all" else os.path.join(args.out, task)
            m = write_game_text(task, root, counts, args.data_seed, workers=args.workers,
                                overwrite=args.overwrite, command=command, progress=bar.update)
            rows.append((task, m["files"], m["data_sha256"], root))
    for task, files, sha, root in rows:
        print(f"{task:18} {files:>8} images  data_sha256 {sha[:16]}  {os.path.join(root, 'manifest.json')}")
    return 0


def _add_data_game(data_sub) -> None:
    from foldcnn.data.game_tasks import list_game_tasks

    p = data_sub.add_parser(
        "game", help="synthetic game-screen text for the paper's game tasks (class-per-directory PNGs)",
        description="Write DIR/{train,val,test}/<class>/<index>.png and DIR/manifest.json. "
        "The same arguments give byte-identical files.",
    )
    tasks = list_game_tasks()
    p.add_argument("task", metavar="TASK", choices=tasks + ["all"],
                   help=f"one of {', '.join(tasks)}; or 'all' (each into DIR/<task>/)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must be empty)")
    p.add_argument("--train-size", type=int, default=10_000, metavar="N", help="training images (default 10000)")
    p.add_argument("--val-size", type=int, default=1_000, metavar="N", help="validation images (default 1000)")
    p.add_argument("--test-size", type=int, default=1_000, metavar="N", help="test images (default 1000)")
    p.add_argument("--data-seed", type=int, default=0,
                   help="data seed; each split derives its own, as 'foldcnn train --task T --data-seed S' (default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="W", help="processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace the splits and manifest in a non-empty DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data_game)


_DATA_SUBCOMMANDS.append(_add_data_game)


# ----------------------------------------------------------------------------- data video
def _cmd_data_video(args: argparse.Namespace) -> int:
    import shlex
    import time

    from foldcnn.data.video import generate_video

    h, w = parse_size(args.input_size, flag="--input-size", example="240x320 (height x width)")
    size = (w, h)  # generate_video takes (width, height)
    command = shlex.join(["foldcnn", "data", "video", "--out", args.out, "--frames", str(args.frames),
                          "--data-seed", str(args.data_seed), "--input-size", f"{h}x{w}", "--object", args.object,
                          "--fps", str(args.fps)] + (["--no-distractors"] if args.no_distractors else [])
                         + (["--codec", args.codec] if args.codec else []))
    start = time.perf_counter()
    try:
        r = generate_video(args.out, args.frames, args.data_seed, size, args.object, args.fps,
                           distractors=not args.no_distractors, codec=args.codec, overwrite=args.overwrite,
                           progress=not args.quiet, command=command)
    except (FileExistsError, ImportError) as e:
        raise CLIError(str(e)) from None
    m = r.manifest
    print(f"{r.video_path}: {m['frames']} frames, {h}x{w} (HxW) at {m['fps']} fps, {m['codec']['name']}; "
          f"{m['object']} present in {m['positives']} frames ({m['positives_fraction']:.1%})")
    print(f"labels: {r.labels_path}   manifest: {r.manifest_path}   "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def _add_data_video(data_sub) -> None:
    from foldcnn.data.video import OBJECTS

    p = data_sub.add_parser(
        "video", help="synthetic NoScope-style video: a street scene, per-frame 'object present' labels",
        description="Write DIR/video.mp4 (H.264, yuv420p), DIR/labels.csv (frame,label) and "
        "DIR/manifest.json. The same arguments give the same labels (and, with the same "
        "library versions, the same video bytes).",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--frames", type=int, required=True, metavar="N", help="number of frames (>= 20)")
    p.add_argument("--data-seed", type=int, default=0, help="scene and schedule seed (default 0)")
    p.add_argument("--input-size", default="240x320", metavar="HxW",
                   help="frame size, height x width (default 240x320)")
    p.add_argument("--object", choices=OBJECTS, default="car", help="class whose presence is labelled (default car)")
    p.add_argument("--fps", type=int, default=30, help="frames per second (default 30)")
    p.add_argument("--no-distractors", action="store_true", help="no objects of the other classes")
    p.add_argument("--codec", help="encoder (default libx264, else mpeg4)")
    p.add_argument("--overwrite", action="store_true", help="replace a video already in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data_video)


_DATA_SUBCOMMANDS.append(_add_data_video)


# --------------------------------------------------------------------------- data screens
def _cmd_data_screens(args: argparse.Namespace) -> int:
    import shlex
    import time

    from foldcnn.data.screens import write_screens

    h, w = parse_size(args.input_size, flag="--input-size", example="720x1280 (height x width)")
    size = (w, h)  # write_screens takes (width, height)
    command = shlex.join(["foldcnn", "data", "screens", "--game", args.game, "--seconds", str(args.seconds),
                          "--fps", str(args.fps), "--input-size", f"{h}x{w}", "--data-seed", str(args.data_seed),
                          "--out", args.out])
    start = time.perf_counter()
    frames = max(1, int(round(args.seconds * args.fps)))
    with progress_bar(total=frames, unit="frame", file=sys.stderr, disable=args.quiet, desc="screens") as bar:
        m = write_screens(args.out, args.game, seconds=args.seconds, fps=args.fps, size=size, seed=args.data_seed,
                          overwrite=args.overwrite, progress=bar.update, command=command)
    print(f"{args.out}/video.mp4: {m['frames']} frames, {h}x{w} (HxW) at {m['fps']} fps; regions "
          + ", ".join(f"{r['name']} ({r['task']})" for r in m["regions"]))
    print(f"layout: {args.out}/layout.json (checkpoints named by task: scrape --checkpoints TASK=PATH,...)   "
          f"truth: {args.out}/truth.csv   ({time.perf_counter() - start:.1f} s)")
    return 0


def _add_data_screens(data_sub) -> None:
    from foldcnn.data.screens import GAMES

    p = data_sub.add_parser(
        "screens", help="synthetic game screens to scrape: a match's HUD readouts over a moving scene (H.264)",
        description="Write DIR/video.mp4, DIR/layout.json (a region per HUD readout; its zoo task where the "
        "checkpoint goes), DIR/truth.csv (frame, region, class) and DIR/manifest.json. The HUD text is rendered "
        "by the game tasks' renderer, so models trained on 'foldcnn data game' crops read it.")
    p.add_argument("--game", required=True, choices=list(GAMES), help="which game's HUD")
    p.add_argument("--seconds", type=float, default=60.0, help="length (default 60)")
    p.add_argument("--fps", type=int, default=30, help="frames per second (default 30)")
    p.add_argument("--input-size", default="720x1280", metavar="HxW", help="frame size, height x width (default 720x1280)")
    p.add_argument("--data-seed", type=int, default=0, help="match and scene seed (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace a video already in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data_screens)


_DATA_SUBCOMMANDS.append(_add_data_screens)


COMMANDS = [_add_data]
