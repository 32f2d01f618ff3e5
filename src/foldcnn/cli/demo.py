"""`foldcnn demo`: train the original and a folded CNN on generated data and compare them."""

from __future__ import annotations

import argparse
import sys

from foldcnn.cli.common import CLIError


def _cmd_demo(args: argparse.Namespace) -> int:
    from foldcnn.workflows.demo import DemoConfig, format_summary, run_demo

    quick = dict(train_size=600, val_size=200, test_size=400, epochs_original=2, epochs_folded=2,
                 trials=1, min_seconds=0.05, batch_size=256, backends=(("eager", "fp32"),))
    base = DemoConfig(**quick) if args.quick else DemoConfig()
    overrides = {k: v for k, v in {"task": args.task, "fold": args.fold, "train_size": args.train_size,
                                   "epochs_original": args.epochs_original,
                                   "epochs_folded": args.epochs_folded, "distill": args.distill}.items()
                 if v is not None}
    cfg = DemoConfig(**{**base.__dict__, **overrides})
    from foldcnn.models import model_entry

    try:
        model_entry(cfg.task)
    except KeyError as e:
        raise CLIError(e.args[0]) from None

    def stage(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = run_demo(args.out, cfg, progress=not args.quiet, on_stage=stage)
    print()
    print(format_summary(cfg, result))
    print(f"\nreport: {result.report}   ({result.seconds / 60:.1f} min)")
    return 0


def _add_demo(sub) -> None:
    from foldcnn.workflows.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo", help="generate a game task, train the original and a folded CNN, compare accuracy and "
        "throughput, write a report (about 10 minutes on 2 CPU cores)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="foldcnn-demo", help="folder for report.md, plots and both checkpoints")
    p.add_argument("--task", default=None, help=f"game task to generate and learn (default {d.task})")
    p.add_argument("--fold", type=int, default=None, help=f"fold of the folded model (default {d.fold})")
    p.add_argument("--train-size", type=int, default=None, help=f"generated training images (default {d.train_size})")
    p.add_argument("--epochs-original", type=int, default=None, help=f"default {d.epochs_original}")
    p.add_argument("--epochs-folded", type=int, default=None, help=f"default {d.epochs_folded}")
    p.add_argument("--distill", choices=("kl", "mse", "none"), default=None,
                   help=f"the folded CNN distills from the original (default {d.distill}; none: labels only)")
    p.add_argument("--quick", action="store_true", help="a tiny run (under a minute) to check the set-up")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)


COMMANDS = [_add_demo]
