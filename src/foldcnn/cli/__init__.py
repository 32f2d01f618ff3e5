"""Command line: the only package that parses argv. Each subcommand is a small function that
calls the library and prints; library code never prints. One module per command group."""

from __future__ import annotations

import argparse
import importlib
import sys

from foldcnn.cli.common import CLIError

__all__ = ["CLIError", "build_parser", "main"]


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
    for name in _MODULES:
        for add in importlib.import_module(f"foldcnn.cli.{name}").COMMANDS:
            add(sub)
    return parser


# One module per command group; each lists its parser builders in COMMANDS.
_MODULES = ("demo", "models", "data", "train", "export", "predict", "serve", "bench")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CLIError, KeyError, ValueError, FileNotFoundError, TypeError, ConnectionError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"foldcnn {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
