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
def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``only`` (a module of _MODULES) of that module's
    commands alone: what ``main`` uses for the commands of a slim install (_SLIM), so that their
    start-up imports neither the other commands' modules nor torch."""
    from foldcnn import __version__

    parser = argparse.ArgumentParser(
        prog="foldcnn",
        description="Folded CNNs: classify f images at once with a sqrt(f)-wider CNN "
        "for higher inference throughput (FoldedCNNs, ICML 2021).",
    )
    parser.add_argument("--version", action="version", version=f"foldcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (only,) if only else _MODULES:
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
# Commands a torch-free install runs, -> the module that defines them: their parser is built alone.
_SLIM = {"predict": "predict", "serve": "serve"}


def _command_of(argv: list[str]) -> str | None:
    """The command word of ``argv`` (its first item when it names a command), else None."""
    return argv[0] if argv and argv[0] in _SLIM else None


def _user_message(e: BaseException) -> str | None:
    """The one sentence to print for a user error, or None for a bug (which keeps its traceback)."""
    if isinstance(e, FoldcnnError):
        return str(e)
    if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == "torch":
        return ("this command needs torch, which this install lacks: pip install 'foldcnn[train]' (an install "
                "without torch runs exported graphs: foldcnn predict MODEL.onnx, see docs/runtime.md)")
    if isinstance(e, OSError) and e.filename is not None:  # a path that is missing, unreadable, not writable
        return f"{e.strerror or e}: {e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
    if isinstance(e, ConnectionError):
        return str(e)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error (FoldcnnError, a path that cannot be read or written) prints
    one sentence and exits 2; anything else is a bug in foldcnn and keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_of(argv)
    parser = build_parser(_SLIM[command]) if command else build_parser()
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
