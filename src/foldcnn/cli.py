"""Command line: the only module that parses argv. Each subcommand is a small function that
calls the library and prints; library code never prints."""

from __future__ import annotations

import argparse
import json
import sys


class CLIError(Exception):
    """An error whose message is meant for the user (printed without a traceback)."""


# ---------------------------------------------------------------------------------- models
def _cmd_models(args: argparse.Namespace) -> int:
    from foldcnn.models import count_params, create_model, list_models, model_entry

    rows = []
    for name in list_models(args.family):
        e = model_entry(name)
        params = count_params(create_model(name, fold=1))
        rows.append({"model": name, "family": e.family, "input_shape": list(e.input_shape),
                     "classes": e.num_classes, "params": params, "description": e.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'model':28} {'family':9} {'input (C,H,W)':14} {'classes':>7} {'params':>11}  description"
    print(header)
    print("-" * len(header))
    for r in rows:
        shape = "x".join(str(s) for s in r["input_shape"])
        print(f"{r['model']:28} {r['family']:9} {shape:14} {r['classes']:>7} {r['params']:>11,}  {r['description']}")
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo (input shape, classes, parameters)")
    p.add_argument("--family", choices=["game", "noscope", "cifar", "baseline"], help="only this family")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_models)


# ------------------------------------------------------------------------------- analyze
def _hidden_widths(report) -> str:
    """Distinct hidden widths in call order: conv outputs, then linear outputs but the last."""
    widths = [layer.output_shape[0] for layer in report.layers if layer.kind == "conv"]
    widths += [layer.output_shape[-1] for layer in report.layers[:-1] if layer.kind == "linear"]
    return ",".join(str(w) for w in dict.fromkeys(widths))


def _analyze_records(args: argparse.Namespace) -> tuple[list[dict], object]:
    from foldcnn.analysis import DEVICES, DTYPE_BYTES, analyze, attainable, measure_peak
    from foldcnn.models import DEFAULT_CHANNEL_MULTIPLE, create_model, list_models, model_entry

    if args.all and args.models:
        raise CLIError("give model names or --all, not both")
    names = args.models or list_models()
    for name in names:
        model_entry(name)  # an unknown name fails before any work
    bpe = DTYPE_BYTES[args.dtype]
    cm = args.channel_multiple if args.channel_multiple is not None else DEFAULT_CHANNEL_MULTIPLE
    device = measure_peak(args.dtype) if args.device == "measured" else DEVICES.get(args.device)
    if device is not None:
        device.peak(args.dtype)  # a dtype the device lacks fails before any work
    records = []
    for name in names:
        base = analyze(create_model(name, fold=1), args.batch, bpe)
        base_pred = attainable(base, device, args.dtype) if device is not None else None
        for f in args.fold:
            r = analyze(create_model(name, fold=f, channel_multiple=cm), args.batch, bpe)
            rec = {
                "model": name, "fold": f, "widths": _hidden_widths(r),
                "width_rounding": "orig" if f == 1 else ("paper" if cm == 1 else f"x{cm}"),
                "channel_multiple": cm, "params": r.params, "batch_size": r.batch_size,
                "dtype": args.dtype, "bytes_per_element": bpe,
                "flops_per_image": r.flops_per_image, "bytes_per_image": r.bytes_per_image,
                "arithmetic_intensity": r.arithmetic_intensity,
                "ai_vs_unfolded": r.arithmetic_intensity / base.arithmetic_intensity,
            }
            if device is not None:
                pred = attainable(r, device, args.dtype)
                rec.update(device=device.name, images_per_s=pred.images_per_s,
                           flops_per_s=pred.flops_per_s, bound=pred.bound,
                           images_per_s_vs_unfolded=pred.images_per_s / base_pred.images_per_s)
            records.append(rec)
    return records, device


def _cmd_analyze(args: argparse.Namespace) -> int:
    records, device = _analyze_records(args)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    cm = records[0]["channel_multiple"] if records else 1
    rounding = "the paper's exact widths" if cm == 1 else \
        f"widths rounded up to a multiple of {cm} (--channel-multiple 1: the paper's exact widths)"
    print(f"batch {args.batch} images, {args.dtype} ({records[0]['bytes_per_element'] if records else '?'} "
          f"bytes/element), {rounding}; FLOPs = 2 x MACs + bias adds, conv/linear only")
    if device is not None:
        print(f"device {device.name}: peak {device.peak(args.dtype) / 1e12:,.4g} TFLOP/s {args.dtype} "
              f"(dense), {device.bytes_per_s / 1e9:,.0f} GB/s; {device.source}")
    head = f"{'model':26} {'fold':>4} {'widths':22} {'params':>10} {'MFLOP/img':>9} {'bytes/img':>10} " \
           f"{'AI':>7} {'AI x':>5}"
    if device is not None:
        head += f" {'images/s':>13} {'bound':7} {'img/s x':>7}"
    print(head)
    print("-" * len(head))
    for r in records:
        widths = f"{r['widths']} ({r['width_rounding']})"
        line = (f"{r['model']:26} {r['fold']:>4} {widths:22} {r['params']:>10,} "
                f"{r['flops_per_image'] / 1e6:>9.2f} {r['bytes_per_image']:>10,.0f} "
                f"{r['arithmetic_intensity']:>7.2f} {r['ai_vs_unfolded']:>5.2f}")
        if device is not None:
            line += f" {r['images_per_s']:>13,.0f} {r['bound']:7} {r['images_per_s_vs_unfolded']:>7.2f}"
        print(line)
    return 0


def _add_analyze(sub) -> None:
    from foldcnn.analysis.roofline import DEVICES, DTYPE_BYTES

    p = sub.add_parser(
        "analyze",
        help="FLOPs, bytes and arithmetic intensity per image (the paper's counting), "
        "with an optional roofline prediction of images/s",
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="zoo model names (default: all)")
    p.add_argument("--all", action="store_true", help="every model of the zoo")
    p.add_argument("--fold", type=int, nargs="+", default=[1, 2, 3, 4], help="fold factors (default 1 2 3 4)")
    p.add_argument("--batch", type=int, default=1024, help="batch size in images (default 1024)")
    p.add_argument("--dtype", choices=list(DTYPE_BYTES), default="fp16", help="element type (default fp16)")
    p.add_argument("--device", choices=[*DEVICES, "measured"],
                   help="predict images/s on a datasheet device, or on this CPU as measured now")
    p.add_argument("--channel-multiple", type=int, default=None,
                   help="round widened layers up to this multiple (1 = paper's exact widths; default 8)")
    p.add_argument("--json", action="store_true", help="one record per (model, fold)")
    p.set_defaults(func=_cmd_analyze)


# ------------------------------------------------------------------------------ train/eval
def _parse_size(text: str | None, flag: str = "--input-size", example: str = "22x52") -> tuple[int, int] | None:
    """'24x48' -> (24, 48): two positive ints joined by 'x', in the order the flag documents."""
    if text is None:
        return None
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CLIError(f"{flag} must look like {example}; got {text!r}") from None
    if a < 1 or b < 1:
        raise CLIError(f"{flag} must be positive, got {text!r}")
    return a, b


def _cmd_train(args: argparse.Namespace) -> int:
    from foldcnn.train.config import TrainConfig
    from foldcnn.train.run import DataSpec, run_training

    model = args.model or args.task
    if model is None:
        raise CLIError("name the model with --model (or give --task, whose model is used)")
    data = DataSpec(task=args.task, data_dir=args.data, train_size=args.train_size,
                    val_size=args.val_size, test_size=args.test_size, seed=args.data_seed,
                    input_size=_parse_size(args.input_size))
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, optimizer=args.optimizer, schedule=args.schedule,
                      seed=args.seed, patience=args.patience, threads=args.threads,
                      precision=args.precision)
    run = run_training(model, data, cfg, args.out, fold=args.fold, channel_multiple=args.channel_multiple,
                       progress=not args.quiet, command=["foldcnn", *sys.argv[1:]])
    s = run["summary"]
    print(f"{s['model']} fold={s['fold']}: test top-1 {s['test_top1']:.2%} (top-5 {s['test_top5']:.2%}), "
          f"best val {s['best_val_top1']:.2%} at epoch {s['best_epoch']}/{s['epochs_run']}, "
          f"{s['train_seconds']:.0f} s training")
    print(f"checkpoint: {args.out}/checkpoint   run manifest: {args.out}/run.json")
    return 0


def _add_train(sub) -> None:
    from foldcnn.train.config import OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a (folded) CNN on a generated task or an image folder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="generate this synthetic game task in memory (see 'foldcnn data game')")
    src.add_argument("--data", help="folder with train/, val/, test/ subfolders of class folders")
    p.add_argument("--model", help="zoo model (default: the task's own model)")
    p.add_argument("--fold", type=int, default=1, help="images classified together (1 = original CNN)")
    p.add_argument("--channel-multiple", type=int, default=None,
                   help="round widened layers up to this multiple (1 = paper's widths; default 8)")
    p.add_argument("--input-size", help="resize folder images to HxW (default: their own size)")
    p.add_argument("--out", required=True, help="run directory (checkpoint/, metrics.jsonl, run.json)")
    p.add_argument("--train-size", type=int, default=6000, help="generated training images")
    p.add_argument("--val-size", type=int, default=1000, help="generated validation images")
    p.add_argument("--test-size", type=int, default=2000, help="generated test images")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="forward pass in bf16 autocast (auto: where the CPU/GPU has bf16 instructions)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule)
    p.add_argument("--seed", type=int, default=d.seed, help="seed of initialization and fold groups")
    p.add_argument("--patience", type=int, default=d.patience, help="early stopping (0 = off)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (0 = default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from foldcnn.data.base import ArrayDataset
    from foldcnn.data.readers import load_image_folder
    from foldcnn.train.checkpoint import load_checkpoint
    from foldcnn.train.loop import evaluate

    ck = load_checkpoint(args.checkpoint)
    ds = load_image_folder(args.data, input_size=ck.model.input_shape[1:])
    if ds.classes != ck.class_names:
        # Folder classes come in sorted order; match them to the checkpoint's classes by name.
        unknown = sorted(set(ds.classes) - set(ck.class_names))
        if unknown:
            raise CLIError(f"{args.data} has class folders the checkpoint does not know: {', '.join(unknown[:8])}; "
                           f"it was trained on {len(ck.class_names)} classes: {', '.join(ck.class_names[:12])} ...")
        remap = torch.tensor([ck.class_names.index(c) for c in ds.classes])
        ds = ArrayDataset(ds.images, remap[ds.labels], ck.class_names, ds.meta)
    m = evaluate(ck.model, ds, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"{m['images']} images: top-1 {m['top1']:.2%}, top-5 {m['top5']:.2%}")
    for c in m["worst_confusions"]:
        print(f"  {c['true']} -> {c['predicted']}: {c['count']}")
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="accuracy of a checkpoint on a folder of class folders")
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--data", required=True, help="folder with one subfolder per class")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_eval)


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

    from tqdm import tqdm

    from foldcnn.data.game_export import write_game_text
    from foldcnn.data.game_tasks import list_game_tasks

    tasks = list_game_tasks() if args.task == "all" else [args.task]
    counts = {"train": args.train, "val": args.val, "test": args.test}
    if min(counts.values()) < 0 or args.workers < 1:
        raise CLIError("--train/--val/--test must be >= 0 and --workers >= 1")
    if os.path.isdir(args.out) and os.listdir(args.out) and not args.overwrite:
        raise CLIError(f"{args.out} is not empty; choose an empty directory or pass --overwrite")
    # the command that reproduces the data (--workers and --overwrite do not change a byte)
    command = shlex.join(["foldcnn", "data", "game", args.task, "--out", args.out, "--train", str(args.train),
                          "--val", str(args.val), "--test", str(args.test), "--seed", str(args.seed)])
    rows = []
    with tqdm(total=sum(counts.values()) * len(tasks), unit="img", file=sys.stderr,
              disable=args.quiet, desc="game text") as bar:
        for task in tasks:
            root = args.out if args.task != "all" else os.path.join(args.out, task)
            m = write_game_text(task, root, counts, args.seed, workers=args.workers,
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
    p.add_argument("--train", type=int, default=10_000, metavar="N", help="training images (default 10000)")
    p.add_argument("--val", type=int, default=1_000, metavar="N", help="validation images (default 1000)")
    p.add_argument("--test", type=int, default=1_000, metavar="N", help="test images (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="data seed; each split derives its own (default 0)")
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

    size = _parse_size(args.size, flag="--size", example="320x240 (width x height)")
    command = shlex.join(["foldcnn", "data", "video", "--out", args.out, "--frames", str(args.frames),
                          "--seed", str(args.seed), "--size", f"{size[0]}x{size[1]}", "--object", args.object,
                          "--fps", str(args.fps)] + (["--no-distractors"] if args.no_distractors else [])
                         + (["--codec", args.codec] if args.codec else []))
    start = time.perf_counter()
    try:
        r = generate_video(args.out, args.frames, args.seed, size, args.object, args.fps,
                           distractors=not args.no_distractors, codec=args.codec, overwrite=args.overwrite,
                           progress=not args.quiet, command=command)
    except (FileExistsError, ImportError) as e:
        raise CLIError(str(e)) from None
    m = r.manifest
    print(f"{r.video_path}: {m['frames']} frames, {size[0]}x{size[1]} at {m['fps']} fps, {m['codec']['name']}; "
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
    p.add_argument("--seed", type=int, default=0, help="scene and schedule seed (default 0)")
    p.add_argument("--size", default="320x240", metavar="WxH", help="frame size, width x height (default 320x240)")
    p.add_argument("--object", choices=OBJECTS, default="car", help="class whose presence is labelled (default car)")
    p.add_argument("--fps", type=int, default=30, help="frames per second (default 30)")
    p.add_argument("--no-distractors", action="store_true", help="no objects of the other classes")
    p.add_argument("--codec", help="encoder (default libx264, else mpeg4)")
    p.add_argument("--overwrite", action="store_true", help="replace a video already in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data_video)


_DATA_SUBCOMMANDS.append(_add_data_video)


# ------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    from foldcnn import __version__

    parser = argparse.ArgumentParser(
        prog="foldcnn",
        description="Folded CNNs: classify f images at once with a sqrt(f)-wider CNN "
        "for higher inference throughput (FoldedCNNs, ICML 2021).",
    )
    parser.add_argument("--version", action="version", version=f"foldcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


_SUBCOMMANDS = [_add_models, _add_analyze, _add_data, _add_train, _add_eval]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CLIError, KeyError, ValueError, FileNotFoundError, TypeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"foldcnn {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
