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


# -------------------------------------------------------------------------------------- data
# Each `foldcnn data KIND` subcommand adds itself to this list (a function taking the
# sub-subparsers object), so generators and readers stay in their own sections below.
_DATA_SUBCOMMANDS: list = []


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="generate synthetic data sets (game text, NoScope-style video)")
    data_sub = p.add_subparsers(dest="data_command", metavar="KIND", required=True)
    for add in _DATA_SUBCOMMANDS:
        add(data_sub)


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


_SUBCOMMANDS = [_add_models, _add_data]


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
