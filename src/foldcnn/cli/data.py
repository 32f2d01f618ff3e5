"""`foldcnn data game` and `foldcnn data video`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from foldcnn.cli.common import HelpFormatter, CLIError, parse_size
from foldcnn.progress import progress_bar

# -------------------------------------------------------------------------------------- data
# Each `foldcnn data KIND` subcommand adds itself to this list (a function taking the
# sub-subparsers object), so generators and readers stay in their own sections below.
_DATA_SUBCOMMANDS: list = []


def _data_command(add):
    """Register a `foldcnn data KIND` subcommand (a function taking the sub-subparsers object)."""
    _DATA_SUBCOMMANDS.append(add)
    return add


def _output_flags(p, func, replaces: str) -> None:
    """--overwrite and --quiet, as every generator takes them, and the function that runs it."""
    p.add_argument("--overwrite", action="store_true", help=f"replace {replaces}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=func)


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="generate synthetic data sets (game text, NoScope-style video)")
    data_sub = p.add_subparsers(dest="data_command", metavar="KIND", required=True)
    for add in _DATA_SUBCOMMANDS:
        add(data_sub)


# ------------------------------------------------------------------------------ data game
def _cmd_data_game(args: argparse.Namespace) -> int:
    from foldcnn.data.game_export import write_game_text
    from foldcnn.data.game_text import check_other_share
    from foldcnn.data.game_tasks import list_game_tasks

    tasks = list_game_tasks() if args.task == "all" else [args.task]
    counts = {"train": args.train_size, "val": args.val_size, "test": args.test_size}
    if min(counts.values()) < 0 or args.workers < 1:
        raise CLIError("--train-size/--val-size/--test-size must be >= 0 and --workers >= 1")
    check_other_share(args.other_share)  # before anything in --out is replaced
    if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:
        raise CLIError(f"{args.out} is not empty; choose an empty directory or pass --overwrite")
    # the command that reproduces the data (--workers and --overwrite do not change a byte)
    command = shlex.join(["foldcnn", "data", "game", args.task, "--out", args.out,
                          "--train-size", str(args.train_size), "--val-size", str(args.val_size),
                          "--test-size", str(args.test_size), "--data-seed", str(args.data_seed),
                          *(["--other-share", str(args.other_share)] if args.other_share is not None else [])])
    rows = []
    with progress_bar(total=sum(counts.values()) * len(tasks), unit="img", file=sys.stderr,
                      disable=args.quiet, desc="game text") as bar:
        for task in tasks:
            root = args.out if args.task != "all" else os.path.join(args.out, task)
            m = write_game_text(task, root, counts, args.data_seed, workers=args.workers,
                                overwrite=args.overwrite, command=command, progress=bar.update,
                                other_share=args.other_share)
            rows.append((task, m["files"], m["data_sha256"], root))
    for task, files, sha, root in rows:
        print(f"{task:18} {files:>8} images  data_sha256 {sha[:16]}  {os.path.join(root, 'manifest.json')}")
    return 0


@_data_command
def _add_data_game(data_sub) -> None:
    from foldcnn.cli.options import add_options
    from foldcnn.data.game_tasks import list_game_tasks
    from foldcnn.train.sources import DataSpec

    p = data_sub.add_parser(
        "game", help="synthetic game-screen text for the paper's game tasks (class-per-directory PNGs)",
        formatter_class=HelpFormatter,
        description="Write DIR/{train,val,test}/<class>/<index>.png and DIR/manifest.json. "
        "The same arguments give byte-identical files.",
    )
    tasks = list_game_tasks()
    p.add_argument("task", metavar="TASK", choices=tasks + ["all"],
                   help=f"one of {', '.join(tasks)}; or 'all' (each into DIR/<task>/)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must be empty)")
    add_options(p, DataSpec, only=("train_size", "val_size", "test_size", "seed", "other_share"),
                defaults={"train_size": 10_000, "test_size": 1_000})  # as 'foldcnn train --task T' generates them
    p.add_argument("--workers", type=int, default=1, metavar="W", help="processes")
    _output_flags(p, _cmd_data_game, "the splits and manifest in a non-empty DIR")



# ----------------------------------------------------------------------------- data video
def _generate(args: argparse.Namespace, kind: str, example: str, flags: list[str], write) -> int:
    """What `data video` and `data screens` share: the frame size, the command that reproduces the
    output (recorded in its manifest), and the lines ``write((width, height), command)`` returns,
    printed with the time taken."""
    h, w = parse_size(args.input_size, flag="--input-size", example=example)
    command = shlex.join(["foldcnn", "data", kind, "--out", args.out, *flags, "--data-seed", str(args.data_seed),
                          "--input-size", f"{h}x{w}"])
    start = time.perf_counter()
    lines = write((w, h), command)
    print("\n".join(lines) + f"   ({time.perf_counter() - start:.1f} s)")
    return 0


def _cmd_data_video(args: argparse.Namespace) -> int:
    from foldcnn.data.video import generate_video

    def write(size, command):
        try:
            r = generate_video(args.out, args.frames, args.data_seed, size, args.object, args.fps,
                               distractors=not args.no_distractors, codec=args.codec, overwrite=args.overwrite,
                               progress=not args.quiet, command=command)
        except (FileExistsError, ImportError) as e:
            raise CLIError(str(e)) from None
        m = r.manifest
        return [f"{r.video_path}: {m['frames']} frames, {size[1]}x{size[0]} (HxW) at {m['fps']} fps, "
                f"{m['codec']['name']}; {m['object']} present in {m['positives']} frames "
                f"({m['positives_fraction']:.1%})", f"labels: {r.labels_path}   manifest: {r.manifest_path}"]

    flags = ["--frames", str(args.frames), "--object", args.object, "--fps", str(args.fps)]
    flags += (["--no-distractors"] if args.no_distractors else []) + (["--codec", args.codec] if args.codec else [])
    return _generate(args, "video", "240x320 (height x width)", flags, write)


def _video_parser(data_sub, kind: str, func, size: str, seed: str, own: dict, **texts) -> None:
    """The parser of a generator that writes a video: its ``own`` flags (flag -> add_argument's
    keywords), --out, --input-size, --data-seed, --fps and the output flags; ``texts`` are
    add_parser's help and description."""
    p = data_sub.add_parser(kind, formatter_class=HelpFormatter, **texts)
    for flag, kwargs in own.items():
        p.add_argument(flag, **kwargs)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--input-size", default=size, metavar="HxW", help="frame size, height x width")
    p.add_argument("--data-seed", type=int, default=0, help=seed)
    p.add_argument("--fps", type=int, default=30, help="frames per second")
    _output_flags(p, func, "a video already in DIR")


@_data_command
def _add_data_video(data_sub) -> None:
    from foldcnn.data.video import OBJECTS

    own = {"--frames": {"type": int, "required": True, "metavar": "N", "help": "number of frames (>= 20)"},
           "--object": {"choices": OBJECTS, "default": "car", "help": "class whose presence is labelled"},
           "--no-distractors": {"action": "store_true", "help": "no objects of the other classes"},
           "--codec": {"help": "encoder (default libx264, else mpeg4)"}}
    _video_parser(data_sub, "video", _cmd_data_video, "240x320", "scene and schedule seed", own,
                  help="synthetic NoScope-style video: a street scene, per-frame 'object present' labels",
                  description="Write DIR/video.mp4 (H.264, yuv420p), DIR/labels.csv (frame,label) and "
                  "DIR/manifest.json. The same arguments give the same labels (and, with the same library "
                  "versions, the same video bytes).")


# --------------------------------------------------------------------------- data screens
def _cmd_data_screens(args: argparse.Namespace) -> int:
    from foldcnn.data.screens import write_screens

    def write(size, command):
        frames = max(1, int(round(args.seconds * args.fps)))
        with progress_bar(total=frames, unit="frame", file=sys.stderr, disable=args.quiet, desc="screens") as bar:
            m = write_screens(args.out, args.game, seconds=args.seconds, fps=args.fps, size=size,
                              seed=args.data_seed, overwrite=args.overwrite, progress=bar.update, command=command)
        return [f"{args.out}/video.mp4: {m['frames']} frames, {size[1]}x{size[0]} (HxW) at {m['fps']} fps; regions "
                + ", ".join(f"{r['name']} ({r['task']})" for r in m["regions"]),
                f"layout: {args.out}/layout.json (checkpoints named by task: scrape --checkpoints TASK=PATH,...)   "
                f"truth: {args.out}/truth.csv"]

    flags = ["--game", args.game, "--seconds", str(args.seconds), "--fps", str(args.fps)]
    return _generate(args, "screens", "720x1280 (height x width)", flags, write)


@_data_command
def _add_data_screens(data_sub) -> None:
    from foldcnn.data.screens import GAMES

    _video_parser(data_sub, "screens", _cmd_data_screens, "720x1280", "match and scene seed",
                  {"--game": {"required": True, "choices": list(GAMES), "help": "which game's HUD"},
                   "--seconds": {"type": float, "default": 60.0, "help": "length"}},
                  help="synthetic game screens to scrape: a match's HUD readouts over a moving scene (H.264)",
                  description="Write DIR/video.mp4, DIR/layout.json (a region per HUD readout; its zoo task where "
                  "the checkpoint goes), DIR/truth.csv (frame, region, class) and DIR/manifest.json. The HUD text "
                  "is rendered by the game tasks' renderer, so models trained on 'foldcnn data game' crops read it.")


COMMANDS = [_add_data]
