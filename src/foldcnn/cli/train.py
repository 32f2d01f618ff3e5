"""`foldcnn train` and `foldcnn eval`."""

from __future__ import annotations

import argparse
import sys

from foldcnn.cli.common import (
    MODEL_KWARGS_HELP,
    WIDTH_MULT_HELP,
    CLIError,
    parse_fractions,
    parse_model_kwargs,
    parse_size,
    parse_width_mult,
)


# ------------------------------------------------------------------------------ train/eval
# Flags whose command-line default is "by fold" (TrainConfig.for_fold) or "by --teacher", not the field's.
UNSET = {"epochs": None, "weight_decay": None, "distill": None}


def train_config_from_args(args: argparse.Namespace, fold: int, **overrides):
    """The TrainConfig the training flags describe (foldcnn.cli.options.add_options); epochs and weight
    decay left unset take the fold's budget, distillation is KL when a teacher is given."""
    from foldcnn.cli.options import as_flags, option_values
    from foldcnn.errors import UsageError
    from foldcnn.train.config import TrainConfig

    values = {k: v for k, v in option_values(args, TrainConfig).items() if not (k in UNSET and v is None)}
    if "distill" not in values:  # as foldcnn fold and docs/accuracy.md
        values["distill"] = "kl" if getattr(args, "teacher", None) else "none"
    try:
        return TrainConfig.for_fold(fold, **{**values, **overrides})
    except UsageError as e:
        raise CLIError(as_flags(str(e), TrainConfig)) from None


def _train_inputs(args: argparse.Namespace):
    """(model name, DataSpec, TrainConfig) from the flags; raises on bad combinations."""
    from foldcnn.train.run import DataSpec

    model = args.model or args.task
    if model is None:
        raise CLIError("name the model with --model (or give --task, whose model is used)")
    if args.nproc < 1:
        raise CLIError(f"--nproc must be >= 1, got {args.nproc}")
    if args.distill not in (None, "none") and args.teacher is None:
        raise CLIError("--distill needs --teacher CKPT (an unfolded checkpoint of the same task)")
    if args.video is None and args.labels is not None:
        raise CLIError("--labels go with --video (a folder from 'foldcnn data video' has its own labels.csv)")
    split = parse_fractions(args.video_split, "--video-split") if args.video_split else (0.6, 0.2, 0.2)
    data = DataSpec(task=args.task, data_dir=args.data, video=args.video, labels=args.labels,
                    train_size=args.train_size, val_size=args.val_size, test_size=args.test_size,
                    seed=args.data_seed, input_size=parse_size(args.input_size), video_stride=args.video_stride,
                    video_split=split, video_gap=args.video_gap, on_error=args.on_error,
                    split=parse_fractions(args.split, "--split"))
    cfg = train_config_from_args(args, args.fold)
    for flag, value in (("--consistency", args.consistency), ("--cross-slot-decay", args.cross_slot_decay)):
        if value and args.fold == 1:
            raise CLIError(f"{flag} acts between the images of a fold: it needs --fold 2 or more")
    shown = {"epochs": f"{cfg.epochs} epochs (at least {cfg.min_steps} optimizer steps, with plateau stopping "
                       "on the added ones)", "weight_decay": f"weight decay {cfg.weight_decay:g}"}
    defaulted = [text for k, text in shown.items() if getattr(args, k) is None]
    if defaulted and not args.quiet:
        print(f"fold {args.fold}: {', '.join(defaulted)} (this fold's defaults, docs/accuracy.md; "
              f"--epochs and --weight-decay change them)", file=sys.stderr)
    if args.fold > 1 and args.teacher is None and not args.quiet:
        print("tip: folded models get closer to the original with --teacher <its fold=1 checkpoint> "
              "--distill kl (docs/accuracy.md)", file=sys.stderr)
    return model, data, cfg


def _train(args: argparse.Namespace) -> int:
    from foldcnn.train.run import run_training

    model, data, cfg = _train_inputs(args)
    run = run_training(model, data, cfg, args.out, fold=args.fold, channel_multiple=args.channel_multiple,
                       progress=not args.quiet, command=args.command_line, teacher=args.teacher,
                       allow_folded_teacher=args.allow_folded_teacher, resume=args.resume,
                       overwrite=args.overwrite, state_every_steps=args.save_every_steps,
                       regroupings=args.regroupings, model_kwargs=parse_model_kwargs(args.model_kwargs),
                       weights=args.weights, log=lambda msg: print(f"note: {msg}", file=sys.stderr),
                       width_mult=parse_width_mult(args.width_mult))
    if "summary" not in run:  # not rank 0 of a multi-process run
        return 0
    _print_skipped(run["data"], args.out)
    s = run["summary"]
    print(f"{s['model']} fold={s['fold']}: test top-1 {s['test_top1']:.2%} (top-5 {s['test_top5']:.2%}), "
          f"best val {s['best_val_top1']:.2%} at epoch {s['best_epoch']}/{s['epochs_run']}, "
          f"{s['train_seconds']:.0f} s training")
    print(f"checkpoint: {args.out}/checkpoint   run manifest: {args.out}/run.json")
    if "test_flip_rate" in s:
        print(f"fold-mates: {s['test_flip_rate']:.2%} of test images change class over {args.regroupings} other "
              f"random groupings; top-1 spread {s['test_top1_spread']:.2%} (run.json: test_regrouping)")
    return 0


def _print_skipped(data_meta: dict, out: str) -> None:
    """Unreadable images of a training folder (skipped with --on-error skip): a count on stderr."""
    skipped = data_meta.get("skipped_images") or []
    if skipped:
        few = "; ".join(f"{f['path']} ({f['reason']})" for f in skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        print(f"skipped {len(skipped)} unreadable image(s), listed in {out}/run.json: {few}", file=sys.stderr)


def _train_rank(args: argparse.Namespace) -> None:
    """One process of `foldcnn train --nproc N` (started by foldcnn.train.distributed.launch)."""
    _train(args)


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    import torch

    from foldcnn.train import distributed

    args.command_line = ["foldcnn", *sys.argv[1:]]
    if args.regroupings < 0:
        raise CLIError(f"--regroupings must be >= 0 (0 = off), got {args.regroupings}")
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.nproc > 1:
        if under_torchrun:
            raise CLIError("--nproc starts its own processes; under torchrun leave it out")
        from foldcnn.models import model_entry
        from foldcnn.train.sources import check_data_spec

        from foldcnn.train.run import check_out_dir

        model, data, _ = _train_inputs(args)  # bad flags, model or data fail here, not in N processes
        model_entry(model)
        check_data_spec(data)
        check_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
        try:
            distributed.launch(_train_rank, args.nproc, (args,), device=device, threads=args.threads)
        except distributed.DistributedError as e:
            raise CLIError(str(e)) from None
        return 0
    if not under_torchrun:
        return _train(args)
    try:
        distributed.init_from_env(device)
    except distributed.DistributedError as e:
        raise CLIError(str(e)) from None
    try:
        return _train(args)
    finally:
        distributed.shutdown()


def _add_train(sub) -> None:
    from foldcnn.cli.options import add_options
    from foldcnn.train.config import DEFAULT_STATE_EVERY_STEPS, TrainConfig

    p = sub.add_parser("train", help="train a (folded) CNN on a generated task, an image folder or a video",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="generate this synthetic game task in memory (see 'foldcnn data game')")
    src.add_argument("--data", help="folder with train/, val/, test/ subfolders of class folders, a folder of "
                     "class folders only (DIR/<class>/*.png; split by --split), or a folder written by "
                     "'foldcnn data video' (video.mp4 + labels.csv)")
    src.add_argument("--video", help="a video file; frames are split in time into train/val/test")
    p.add_argument("--model", help="zoo model, or your own CNN as package.module:Name (an nn.Module class or a "
                   "function returning one, for one image; the current directory is importable) "
                   "(default: the task's own model)")
    p.add_argument("--model-kwargs", help=MODEL_KWARGS_HELP)
    p.add_argument("--weights", help="start from the original's trained weights (fold 1): a .safetensors file or "
                   "a .pt/.pth state_dict")
    p.add_argument("--split", default="0.8,0.1,0.1", metavar="TR,VA,TE",
                   help="train,val,test fractions of a --data folder of class folders only (seeded by --data-seed, "
                   "stratified by class)")
    p.add_argument("--fold", type=int, default=1, help="images classified together (1 = original CNN)")
    p.add_argument("--width-mult", help=WIDTH_MULT_HELP)
    p.add_argument("--channel-multiple", type=int, default=None,
                   help="round widened layers up to this multiple (1 = paper's widths; default 8)")
    p.add_argument("--input-size", help="resize folder images (or video frames; default 50x50) to HxW "
                   "(default: their own size; mixed sizes in a folder of class folders: the most common)")
    p.add_argument("--out", required=True, help="run directory (checkpoint/, metrics.jsonl, run.json, "
                   "train_state.pt)")
    p.add_argument("--train-size", type=int, default=6000, help="generated training images")
    p.add_argument("--val-size", type=int, default=1000, help="generated validation images")
    p.add_argument("--test-size", type=int, default=2000, help="generated test images")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("--labels", help="per-frame labels of --video, CSV frame,label (default: labels.csv beside it)")
    p.add_argument("--video-stride", type=int, default=1, help="keep every N-th video frame")
    p.add_argument("--video-split", default=None, metavar="TR,VA,TE",
                   help="train,val,test fractions of the video in time order (default 0.6,0.2,0.2)")
    p.add_argument("--video-gap", type=int, default=0, help="frames left out between two video splits")
    p.add_argument("--teacher", help="unfolded (fold=1) checkpoint of the same task to distill from")
    add_options(p, TrainConfig, defaults=UNSET, group_title="training (foldcnn.train.config.TrainConfig)")
    p.add_argument("--allow-folded-teacher", action="store_true", help="accept a teacher with fold > 1")
    p.add_argument("--regroupings", type=int, default=10, metavar="R",
                   help="folded models: after training, classify the test images in R other random fold groupings "
                        "and record the flip rate and top-1 spread in run.json (0 = off)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its train_state.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in a non-empty --out, replacing the run there (without it or --resume "
                   "a non-empty --out is an error)")
    p.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                   help="unreadable images in a --data folder: skip them (counted on stderr, listed in run.json) "
                   "or stop on the first")
    p.add_argument("--save-every-steps", type=int, default=DEFAULT_STATE_EVERY_STEPS,
                   help="also write train_state.pt every N steps within an epoch (0 = after each epoch only)")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes (DDP: gloo on CPU, nccl on GPU); or start under torchrun")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


# PredictOptions foldcnn eval does not take as flags, and why (foldcnn.cli.options).
EVAL_UNSUPPORTED = {
    "stride": "eval reads class folders of images, not videos",
    "workers": "eval reads the folder first, then classifies the images in memory",
    "decoders": "eval reads the folder first, then classifies the images in memory",
    "keyframes": "eval reads image folders, not videos",
}


def _cmd_eval(args: argparse.Namespace) -> int:
    """Accuracy through the Predictor, images in the folder's order: the answers `foldcnn predict`
    gives for the same ordered files (same grouping into folds, same engine and options)."""
    import torch

    from foldcnn.cli.options import predict_options
    from foldcnn.data.readers import load_image_folder
    from foldcnn.infer import Predictor
    from foldcnn.infer.regrouping import regrouping_report
    from foldcnn.train.metrics import classification_metrics

    options = predict_options(args).replace(workers=0)
    with Predictor.from_checkpoint(args.checkpoint, options) as p:
        ds = load_image_folder(args.data, input_size=p.input_shape[1:], resize=options.resize_mode or "bilinear",
                               on_error=options.on_error, max_pixels=options.max_pixels)
        labels = _labels_in_checkpoint_order(ds, p.class_names, args.data)
        _, probs = p.predict_arrays(ds.images)
        m = classification_metrics(torch.from_numpy(probs), labels, p.class_names)
        m["grouping"] = "input order (the folder's sorted files, folded f at a time as foldcnn predict does)"
        m["options"] = options.to_dict()
        skipped = (ds.meta.get("read_report") or {}).get("skipped") or []
        m["skipped"], m["skipped_images"] = len(skipped), skipped
        if args.regroupings:
            m["regrouping"] = regrouping_report(p, ds.images, labels.numpy(), regroupings=args.regroupings,
                                                seed=args.regroup_seed).to_dict()
    if args.json:
        from foldcnn.cli.options import write_json_output

        write_json_output(m, args.json)
        if args.json == "-":
            return 0
    print(f"{m['images']} images: top-1 {m['top1']:.2%}, top-5 {m['top5']:.2%} (folds in input order; "
          f"{p.stats.backend}/{p.stats.precision}, fold {p.fold})")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s) (--on-error skip):")
        for s in skipped[:20]:
            print(f"  {s['path']}: {s['reason']}")
    for c in m["worst_confusions"]:
        print(f"  {c['true']} -> {c['predicted']}: {c['count']}")
    if args.regroupings:
        r = m["regrouping"]
        print(f"regrouped {r['regroupings']} times (seeds {r['seeds'][0]}..{r['seeds'][-1]}): {r['flip_rate']:.2%} of "
              f"images changed class; top-1 {r['top1_min']:.2%} to {r['top1_max']:.2%} (median {r['top1_median']:.2%})")
    return 0


def _labels_in_checkpoint_order(ds, class_names, root):
    """The dataset's labels as indices into the checkpoint's classes (folders match by name)."""
    import torch

    if ds.classes == list(class_names):
        return ds.labels
    unknown = sorted(set(ds.classes) - set(class_names))
    if unknown:
        raise CLIError(f"{root} has class folders the checkpoint does not know: {', '.join(unknown[:8])}; "
                       f"it was trained on {len(class_names)} classes: {', '.join(list(class_names)[:12])} ...")
    remap = torch.tensor([list(class_names).index(c) for c in ds.classes])
    return remap[ds.labels]


def _add_eval(sub) -> None:
    from foldcnn.cli.options import add_json_flag, add_predict_options

    p = sub.add_parser("eval", help="accuracy of a checkpoint on a folder of class folders",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Classifies the folder's images in sorted order, folded f at a time in that "
                       "order, exactly as foldcnn predict does on the same files; --regroupings R also "
                       "classifies them in R random orders and reports how many images change class "
                       "(the answers of a folded model depend on its fold-mates).")
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--data", required=True, help="folder with one subfolder per class")
    add_predict_options(p, unsupported=EVAL_UNSUPPORTED)
    p.add_argument("--regroupings", type=int, default=0, metavar="R",
                   help="also classify the images in R random groupings and report the flip rate and top-1 spread")
    p.add_argument("--regroup-seed", type=int, default=0, help="seed of the first random grouping")
    add_json_flag(p, what="the metrics")
    p.set_defaults(func=_cmd_eval)


COMMANDS = [_add_train, _add_eval]
