"""`foldcnn demo`: train the original and a folded CNN on generated data and compare them.

Its flags are fields of the configs DemoConfig composes (foldcnn.cli.options.add_options): the
generated task (DataSpec), the fold (DemoConfig), the two training recipes (TrainConfig, one flag
each for the original's and the folded model's epochs). A flag left out keeps DemoConfig's value,
or ``DemoConfig.quick()``'s with --quick.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from foldcnn.cli.common import HelpFormatter, CLIError


def _given(args: argparse.Namespace, **names: str) -> dict:
    """{field: value} of the flags given (dest -> field in ``names``)."""
    return {name: getattr(args, dest) for dest, name in names.items() if getattr(args, dest) is not None}


def demo_config(args: argparse.Namespace):
    """The DemoConfig the flags describe; a bad value is one sentence."""
    from foldcnn.errors import UsageError
    from foldcnn.workflows.demo import DemoConfig

    base = DemoConfig.quick() if args.quick else DemoConfig()
    try:
        return replace(base, **_given(args, fold="fold"),
                       data=replace(base.data, **_given(args, task="task", train_size="train_size")),
                       original=replace(base.original, **_given(args, epochs_original="epochs")),
                       folded=replace(base.folded, **_given(args, epochs_folded="epochs", distill="distill")))
    except UsageError as e:
        raise CLIError(str(e)) from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from foldcnn.workflows.demo import format_summary, run_demo

    cfg = demo_config(args)
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
    from foldcnn.cli.options import add_options
    from foldcnn.train.config import TrainConfig
    from foldcnn.train.sources import DataSpec
    from foldcnn.workflows.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo", help="generate a game task, train the original and a folded CNN, compare accuracy and "
        "throughput, write a report (about 10 minutes on 2 CPU cores)",
        formatter_class=HelpFormatter)
    p.add_argument("--out", default="foldcnn-demo", help="folder for report.md, plots and both checkpoints")
    add_options(p, DataSpec, only=("task", "train_size"), defaults={"task": None, "train_size": None},
                helps={"task": f"game task to generate and learn (default {d.task})",
                       "train_size": f"generated training images (default {d.data.train_size})"})
    add_options(p, DemoConfig, defaults={"fold": None}, helps={"fold": f"fold of the folded model (default {d.fold})"})
    add_options(p, TrainConfig, only=("epochs",), defaults={"epochs": None}, flags={"epochs": "--epochs-original"},
                helps={"epochs": f"epochs of the original (default {d.original.epochs})"})
    add_options(p, TrainConfig, only=("epochs", "distill"), defaults={"epochs": None, "distill": None},
                flags={"epochs": "--epochs-folded"},
                helps={"epochs": f"epochs of the folded model (default {d.folded.epochs})",
                       "distill": f"the folded CNN distills from the original (default {d.folded.distill}; none: "
                                  "labels only)"})
    p.add_argument("--quick", action="store_true", help="a tiny run (under a minute) to check the set-up")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)


COMMANDS = [_add_demo]
