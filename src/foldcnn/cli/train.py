"""`foldcnn train` and `foldcnn eval`."""

from __future__ import annotations

import argparse
import json
import sys

from foldcnn.cli.common import CLIError, parse_size


# ------------------------------------------------------------------------------ train/eval
def _cmd_train(args: argparse.Namespace) -> int:
    from foldcnn.train.config import TrainConfig
    from foldcnn.train.run import DataSpec, run_training

    model = args.model or args.task
    if model is None:
        raise CLIError("name the model with --model (or give --task, whose model is used)")
    data = DataSpec(task=args.task, data_dir=args.data, train_size=args.train_size,
                    val_size=args.val_size, test_size=args.test_size, seed=args.data_seed,
                    input_size=parse_size(args.input_size))
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


COMMANDS = [_add_train, _add_eval]
