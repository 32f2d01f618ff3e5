"""`foldcnn fold`: your own CNN and images to a faster, verified, deployable folded model."""

from __future__ import annotations

import argparse
import sys

from foldcnn.cli.common import (
    MODEL_KWARGS_HELP,
    CLIError,
    parse_fractions,
    parse_model_kwargs,
    parse_size,
    parse_width_mults,
)


def _folds(args: argparse.Namespace) -> tuple[int, ...]:
    if args.folds is None and args.fold is None:
        return (1, 2, 4) if args.search else (4,)
    text = args.folds if args.folds is not None else str(args.fold)
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CLIError(f"--folds takes comma-separated integers, like 2,3,4; got {text!r}") from None


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CLIError(f"{flag} takes comma-separated integers, like 8,32; got {text!r}") from None


def _backends(text: str | None) -> tuple[tuple[str, str], ...] | None:
    if text is None:
        return None
    pairs = [t.strip().split("/") for t in text.split(",") if t.strip()]
    if not pairs or any(len(p) != 2 or not all(p) for p in pairs):
        raise CLIError(f"--backends takes backend/precision pairs like ort/fp32,ort/int8; got {text!r}")
    return tuple((a, b) for a, b in pairs)


def _cmd_fold(args: argparse.Namespace) -> int:
    from foldcnn.cli.train import train_config_from_args
    from foldcnn.workflows.fold import REPORT_JSON, REPORT_MD, FoldOptions, run_fold
    from foldcnn.train.sources import DataSpec

    data = DataSpec(data_dir=args.data, input_size=parse_size(args.input_size), seed=args.data_seed,
                    split=parse_fractions(args.split, "--split"))
    try:
        batch_sizes = tuple(int(v) for v in args.batch_sizes.split(","))
    except ValueError:
        raise CLIError(f"--batch-sizes takes integers like 256,1024; got {args.batch_sizes!r}") from None
    precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip()) if args.precision else None
    opts = FoldOptions(model=args.model, data=data, folds=_folds(args), model_kwargs=parse_model_kwargs(args.model_kwargs),
                       weights=args.weights, max_accuracy_drop=args.max_accuracy_drop,
                       channel_multiple=args.channel_multiple, epochs=args.epochs, original_epochs=args.original_epochs,
                       weight_decay=args.weight_decay, train=train_config_from_args(args, 1), precisions=precisions,
                       bench_batch_sizes=batch_sizes,
                       bench_backends=_backends(args.backends), bench_trials=args.trials,
                       bench_min_seconds=args.min_seconds, search=args.search,
                       widths=parse_width_mults(args.widths, "--widths"),
                       channel_multiples=_ints(args.channel_multiples, "--channel-multiples"),
                       max_flip_rate=args.max_flip_rate, invariant=args.invariant, abandon_margin=args.abandon_margin,
                       engine=args.engine, address=args.address)
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


def _add_search_flags(p) -> None:
    """--search and what it explores and keeps (foldcnn.workflows.fold.search)."""
    p.add_argument("--search", action="store_true", help="find the fastest model on this machine within the "
                   "budget: every fold x width multiplier (narrower fold-1 CNNs too), timed first with random "
                   "weights, trained fastest first, hopeless learning curves abandoned (docs/search.md)")
    p.add_argument("--widths", help="--search: width multipliers relative to the original's, comma-separated "
                   "(default 0.5,0.71,1 and sqrt(f) for each fold f; sqrt(f), the paper's point, is always in)")
    p.add_argument("--channel-multiples", help="--search: width roundings to try, e.g. 8,32 (default: "
                   "--channel-multiple)")
    p.add_argument("--max-flip-rate", type=float, default=None, help="--search: the largest share of validation "
                   "images whose class may change with their fold-mates (default: no limit)")
    p.add_argument("--invariant", action="store_true", help="--search: train the folded candidates with "
                   "--cross-slot-decay inf, so answers cannot depend on fold-mates")
    p.add_argument("--abandon-margin", type=float, default=2.0, help="--search: points of validation top-1 a "
                   "candidate's curve may trail the original's progress before it is abandoned at 1/4 or 1/2 of "
                   "its epochs")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="--search: ray trains the candidates "
                   "as Ray Tune trials side by side, stopped by its ASHA scheduler (one trial per candidate)")
    p.add_argument("--address", help="--engine ray: the Ray cluster to join (default: a local one, started and "
                   "stopped)")


def _add_timing_flags(p) -> None:
    """The interleaved throughput sweep that times every model (foldcnn.bench)."""
    p.add_argument("--backends", help="engines to time, as backend/precision pairs (default: every CPU engine here "
                   "except torch.compile)")
    p.add_argument("--batch-sizes", default="256,1024", help="batch sizes (images) to time; each model keeps "
                   "its best")
    p.add_argument("--precision", help="the engines' precisions to time and choose from, comma-separated, e.g. fp32 "
                   "(for a deployment that cannot quantize) or fp32,int8 (default: every precision here)")
    p.add_argument("--trials", type=int, default=3, help="interleaved timing trials")
    p.add_argument("--min-seconds", type=float, default=0.3, help="length of each timed block")


def _add_fold(sub) -> None:
    from foldcnn.cli.options import add_options
    from foldcnn.cli.train import UNSET
    from foldcnn.train.config import TrainConfig

    p = sub.add_parser(
        "fold", help="your CNN + your images -> a faster folded model, verified and exported (one command)",
        description="Evaluates (or trains, then evaluates) the original on the test split, trains each folded "
        "model with the project's recipe (train-time BatchNorm, zero-init head, fold-slot tying, distillation "
        "from the original, slot-diagonal start), measures original and folded throughput in one interleaved run, picks the "
        "fastest folded model within --max-accuracy-drop points, exports it to ONNX and writes "
        "OUT/report.md and OUT/report.json. Resumable with --resume. With --search: every fold x width (narrower "
        "fold-1 CNNs too) is timed first, the fastest trained first, and the fastest within the budget chosen on "
        "validation (docs/search.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="your CNN as package.module:Name (an nn.Module class or a function returning one, "
                   "for one image; the current directory is importable) or a zoo model name")
    p.add_argument("--data", required=True, help="folder of class folders (DIR/<class>/*.png; split by --split), or "
                   "of train/, val/ and test/ subfolders of class folders")
    p.add_argument("--out", required=True, help="run directory (original/, fold<f>/, model.onnx, report.md, report.json)")
    p.add_argument("--model-kwargs", help=MODEL_KWARGS_HELP)
    p.add_argument("--weights", help="the original's trained weights (.safetensors or a .pt/.pth state_dict); "
                   "without them the original is trained first")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--fold", type=int, default=None, help="the fold to try (default 4)")
    group.add_argument("--folds", help="several folds to try, e.g. 2,3,4 (with --search 1 adds the narrower CNNs; "
                       "default there 1,2,4)")
    _add_search_flags(p)
    p.add_argument("--max-accuracy-drop", type=float, default=1.0,
                   help="points of top-1 a model may lose against the original to be chosen (test top-1; "
                   "validation top-1 with --search)")
    p.add_argument("--split", default="0.8,0.1,0.1", metavar="TR,VA,TE",
                   help="train,val,test fractions of a folder of class folders (seeded, stratified)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the split")
    p.add_argument("--input-size", help="resize images to HxW (default: their size; mixed sizes: the most common)")
    p.add_argument("--channel-multiple", type=int, default=None,
                   help="round widened layers up to this multiple (1 = paper's widths; default 8)")
    p.add_argument("--original-epochs", type=int, default=None, help="epochs of the original when it is trained "
                   "(default: by fold, as --epochs: 60, raised on small sets)")
    _add_timing_flags(p)
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
