"""Command line: the only package that parses argv. Each subcommand is a small function that
calls the library and prints; library code never prints. One module per command group."""

from __future__ import annotations

import argparse
import importlib
import sys

from foldcnn.cli.common import CLIError
from foldcnn.errors import FoldcnnError

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
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Flags are spelled out: '--batch' is not taken for '--batch-size' (nor an old spelling for a new one)."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


# One module per command group; each lists its parser builders in COMMANDS.
_MODULES = ("demo", "models", "data", "train", "fold", "export", "predict", "scrape", "serve", "bench")


def _user_message(e: BaseException) -> str | None:
    """The one sentence to print for a user error, or None for a bug (which keeps its traceback)."""
    if isinstance(e, FoldcnnError):
        return str(e)
    if isinstance(e, OSError) and e.filename is not None:  # a path that is missing, unreadable, not writable
        return f"{e.strerror or e}: {e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
    if isinstance(e, ConnectionError):
        return str(e)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error (FoldcnnError, a path that cannot be read or written) prints
    one sentence and exits 2; anything else is a bug in foldcnn and keeps its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        msg = _user_message(e)
        if msg is None:
            raise
        print(f"foldcnn {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
