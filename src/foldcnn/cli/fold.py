"""`foldcnn fold`: your own CNN and images to a faster, verified, deployable folded model."""

from __future__ import annotations

import argparse
import sys

from foldcnn.cli.common import HelpFormatter, CLIError

_DESCRIPTION = (
    "Evaluates (or trains, then evaluates) the original on the test split, trains each folded model with the "
    "project's recipe (train-time BatchNorm, zero-init head, fold-slot tying, distillation from the original, "
    "slot-diagonal start), measures original and folded throughput in one interleaved run, picks the fastest "
    "folded model within --max-accuracy-drop points, exports it to ONNX and writes OUT/report.md and "
    "OUT/report.json. Resumable with --resume. With --search: every fold x width (narrower fold-1 CNNs too) is "
    "timed first, the fastest trained first, and the fastest within the budget chosen on validation "
    "(docs/search.md).")


def _folds(args: argparse.Namespace) -> tuple[int, ...]:
    if args.folds is not None and args.fold is not None:
        raise CLIError("--fold and --folds exclude each other: give one fold or a list")
    if args.folds is None and args.fold is None:
        return (1, 2, 4) if args.search else (4,)
    text = args.folds if args.folds is not None else str(args.fold)
    try:  # FoldOptions says which folds it takes
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CLIError(f"--folds takes comma-separated integers, like 2,3,4; got {text!r}") from None


def _cmd_fold(args: argparse.Namespace) -> int:
    from foldcnn.cli.options import config_from_args
    from foldcnn.cli.train import train_config_from_args
    from foldcnn.models.spec import ModelSpec
    from foldcnn.train.sources import DataSpec
    from foldcnn.workflows.fold import REPORT_JSON, REPORT_MD, FoldOptions, run_fold

    if args.data is None:
        raise CLIError("--data is required: a folder of class folders, or of train/, val/ and test/ subfolders")
    model = config_from_args(ModelSpec, args, {"name": args.model, "fold": 1, "width_mult": None})
    opts = config_from_args(FoldOptions, args, {
        "model": model, "data": config_from_args(DataSpec, args), "train": train_config_from_args(args, 1),
        "folds": _folds(args), "epochs": args.epochs, "weight_decay": args.weight_decay})
    quiet = args.quiet
    report = run_fold(opts, args.out, resume=args.resume, progress=not quiet, command=["foldcnn", *sys.argv[1:]],
                      log=None if quiet else (lambda msg: print(f"foldcnn fold: {msg}", file=sys.stderr)),
                      train_only=args.train_only)
    if args.search:
        _print_search(report, args.out)
        return 0
    if args.train_only:
        for f, run in report["stages"].items():
            print(f"fold {f}: test top-1 {run['summary']['test_top1']:.2%}")
        print("trained; measure and choose later with the same command and --resume (without --train-only)")
        return 0
    o, c = report["original"], report["chosen"]
    print(f"original: test top-1 {o['top1']:.2%}, {o['images_per_s']:,.0f} images/s ({o['engine']}, batch {o['batch_size']})")
    for f in report["folded"]:
        print(f"fold {f['fold']}: test top-1 {f['top1']:.2%} ({f['top1_drop_points']:+.2f} points drop), "
              f"{f['images_per_s']:,.0f} images/s ({f['engine']}, batch {f['batch_size']}), {f['gain']:.2f}x")
    print(f"chosen: fold {c['fold']}: {c['reason']}")
    print(f"wrote {args.out}/{REPORT_MD}, {args.out}/{REPORT_JSON}, {c['onnx']}"
          + (f", {c['onnx_int8']}" if c.get("onnx_int8") else ""))
    return 0


def _print_search(report: dict, out: str) -> None:
    for r in report["candidates"]:
        acc = "" if r["val_top1"] is None else f", val top-1 {r['val_top1']:.2%}"
        print(f"{r['name']:>12} ({r['kind']}): {r['images_per_s']:,.0f} images/s ({r['engine']}), {r['gain']:.2f}x"
              f"{acc}: {r['status']}")
    c, cost = report["chosen"], report["cost"]
    print(f"chosen: {c['name']}, test top-1 {c['top1']:.2%}; {report['verdict']}")
    print(f"cost: {cost['seconds']:,.0f} s; {cost['trained']} trained, {cost['abandoned']} abandoned, "
          f"{cost['untrained']} untrained")
    print(f"wrote {out}/report.md, {out}/report.json, {c['onnx']}")


def _add_fold(sub) -> None:
    from foldcnn.cli.options import add_options
    from foldcnn.cli.train import UNSET
    from foldcnn.train.run import DataSpec, ModelSpec, TrainConfig
    from foldcnn.workflows.fold import FoldOptions

    p = sub.add_parser("fold", help="your CNN + your images -> a faster folded model, verified and exported (one "
                       "command)", description=_DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("model", help="your CNN as package.module:Name (an nn.Module class or a function returning one, "
                   "for one image; the current directory is importable) or a zoo model name")
    add_options(p, DataSpec, only=("data_dir", "split", "seed", "input_size"), group_title="data (DataSpec)")
    p.add_argument("--out", required=True, help="run directory (original/, fold<f>/, model.onnx, report.md, report.json)")
    add_options(p, ModelSpec, only=("kwargs", "weights", "channel_multiple"), group_title="the original (ModelSpec)")
    p.add_argument("--fold", type=int, default=None, help="the fold to try (default 4; or --folds)")
    add_options(p, FoldOptions, defaults={"folds": None}, group_title="what to try and keep (FoldOptions)")
    p.add_argument("--resume", action="store_true", help="continue a run in --out (finished stages are reused)")
    p.add_argument("--train-only", action="store_true", help="stop after training and evaluating (steps a-c); a later "
                   "--resume run measures throughput, chooses and exports (e.g. on a quiet machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes")
    # The training recipe: the same flags as foldcnn train (TrainConfig); --epochs is the folded
    # models', --distill defaults to kl (from the original), --threads also sets the timing's threads.
    add_options(p, TrainConfig, defaults={**UNSET, "distill": "kl"},
                group_title="training of every stage (foldcnn.train.config.TrainConfig, as foldcnn train)")
    p.set_defaults(func=_cmd_fold)


COMMANDS = [_add_fold]
