"""`foldcnn train` and `foldcnn eval`."""

from __future__ import annotations

import argparse
import sys

from foldcnn.cli.common import (
    HelpFormatter,
    CLIError,
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
    """(ModelSpec, DataSpec, TrainConfig, RunOptions) from the flags; raises on bad combinations."""
    from foldcnn.cli.options import config_from_args
    from foldcnn.models.spec import ModelSpec
    from foldcnn.train.config import RunOptions
    from foldcnn.train.run import DataSpec

    if args.model is None and args.task is None:
        raise CLIError("name the model with --model (or give --task, whose model is used)")
    if args.nproc < 1:
        raise CLIError(f"--nproc must be >= 1, got {args.nproc}")
    if args.distill not in (None, "none") and args.teacher is None:
        raise CLIError("--distill needs --teacher CKPT (an unfolded checkpoint of the same task)")
    model, data = config_from_args(ModelSpec, args), config_from_args(DataSpec, args)
    run = config_from_args(RunOptions, args, {"command": tuple(getattr(args, "command_line", ())) or None,
                                              "log": _note})
    cfg = train_config_from_args(args, model.fold)
    for flag, value in (("--consistency", args.consistency), ("--cross-slot-decay", args.cross_slot_decay)):
        if value and model.fold == 1:
            raise CLIError(f"{flag} acts between the images of a fold: it needs --fold 2 or more")
    shown = {"epochs": f"{cfg.epochs} epochs (at least {cfg.min_steps} optimizer steps, with plateau stopping "
                       "on the added ones)", "weight_decay": f"weight decay {cfg.weight_decay:g}"}
    defaulted = [text for k, text in shown.items() if getattr(args, k) is None]
    if defaulted and not args.quiet:
        print(f"fold {model.fold}: {', '.join(defaulted)} (this fold's defaults, docs/accuracy.md; "
              f"--epochs and --weight-decay change them)", file=sys.stderr)
    if model.fold > 1 and args.teacher is None and not args.quiet:
        print("tip: folded models get closer to the original with --teacher <its fold=1 checkpoint> "
              "--distill kl (docs/accuracy.md)", file=sys.stderr)
    return model, data, cfg, run


def _note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


def _train(args: argparse.Namespace) -> int:
    from foldcnn.train.run import run_training

    run = run_training(*_train_inputs(args))
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
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.nproc > 1:
        if under_torchrun:
            raise CLIError("--nproc starts its own processes; under torchrun leave it out")
        from foldcnn.models import model_entry
        from foldcnn.train.sources import check_data_spec

        from foldcnn.train.run import check_out_dir

        model, data, _, _ = _train_inputs(args)  # bad flags, model or data fail here, not in N processes
        model_entry(model.name or data.task)
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
    from foldcnn.models.spec import ModelSpec
    from foldcnn.train.config import RunOptions, TrainConfig
    from foldcnn.train.sources import DataSpec

    p = sub.add_parser("train", help="train a (folded) CNN on a generated task, an image folder or a video",
                       formatter_class=HelpFormatter,
                       description="Give one data source: --task, --data or --video.")
    add_options(p, DataSpec, group_title="data (foldcnn.train.sources.DataSpec)")
    add_options(p, ModelSpec, group_title="model (foldcnn.models.spec.ModelSpec)")
    add_options(p, TrainConfig, defaults=UNSET, group_title="training (foldcnn.train.config.TrainConfig)")
    add_options(p, RunOptions, group_title="run (foldcnn.train.config.RunOptions)")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes (DDP: gloo on CPU, nccl on GPU); or start under torchrun")
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
                       formatter_class=HelpFormatter,
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
