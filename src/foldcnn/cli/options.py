"""Command-line flags generated from PredictOptions, in one place, for every command that runs a
model (predict, serve, eval, fold): a new option reaches all of them or none.

Each command names the options it cannot honour (with the reason); those get no flag. Old
spellings stay as deprecated aliases for one release (they warn on stderr).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields

from foldcnn.cli.common import CLIError
from foldcnn.errors import UsageError
from foldcnn.infer.options import PredictOptions

__all__ = ["add_json_flag", "add_predict_options", "deprecated_alias", "predict_options", "write_json"]

_TYPES = {"str": str, "int": int, "float": float}


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _type(f):
    base = str(f.type).replace(" ", "").split("|")[0]
    return _TYPES.get(base, str)


def add_predict_options(parser: argparse.ArgumentParser, *, unsupported: dict[str, str] | None = None,
                        defaults: dict | None = None, group_title: str = "inference options") -> None:
    """Add a flag for every PredictOptions field except those in ``unsupported`` (name -> why).

    ``defaults`` overrides a field's default for this command (shown in --help).
    """
    unsupported = unsupported or {}
    defaults = defaults or {}
    unknown = sorted((set(unsupported) | set(defaults)) - {f.name for f in fields(PredictOptions)})
    if unknown:
        raise ValueError(f"not PredictOptions fields: {unknown}")  # a bug in the command's table
    group = parser.add_argument_group(group_title)
    for f in fields(PredictOptions):
        if f.name in unsupported:
            continue
        default = defaults.get(f.name, f.default if f.default is not MISSING else None)
        help_text = f.metadata.get("help", "")
        if f.type == "bool" or isinstance(f.default, bool):
            # Booleans that default to True get a --no-... switch (the metadata names it).
            group.add_argument(_flag(f), dest=f.name, action="store_false" if default else "store_true",
                               help=help_text)
            continue
        kwargs = {"dest": f.name, "default": default, "type": _type(f), "help": help_text}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if f.metadata.get("metavar"):
            kwargs["metavar"] = f.metadata["metavar"]
        group.add_argument(_flag(f), **kwargs)
    parser.set_defaults(_predict_unsupported=dict(unsupported))


def predict_options(args: argparse.Namespace) -> PredictOptions:
    """The PredictOptions the parsed flags describe; an invalid combination is one sentence."""
    values = {f.name: getattr(args, f.name) for f in fields(PredictOptions) if hasattr(args, f.name)}
    try:
        return PredictOptions(**values)
    except UsageError as e:
        raise CLIError(_as_flags(str(e))) from None


def _as_flags(message: str) -> str:
    """'batch_size must be ...' -> '--batch-size must be ...' for the command line."""
    for f in fields(PredictOptions):
        for spelled in (f"{f.name}=", f.name):
            if message.startswith(spelled + " ") or message.startswith(spelled + "="):
                return _flag(f) + message[len(spelled):]
    return message


def deprecated_alias(parser, old: str, new: str, *, dest: str, const=None, value_type=None) -> None:
    """``old`` works as ``new`` for one release and says so on stderr; ``const`` makes it a switch."""

    class Alias(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"foldcnn: {option_string} is deprecated and will be removed in the next release; use {new}",
                  file=sys.stderr)
            setattr(namespace, self.dest, self.const if self.nargs == 0 else values)

    if const is not None:
        parser.add_argument(old, dest=dest, action=Alias, nargs=0, const=const, help=argparse.SUPPRESS)
    else:
        parser.add_argument(old, dest=dest, action=Alias, type=value_type, help=argparse.SUPPRESS)


def add_json_flag(parser, *, what: str = "the results") -> None:
    """``--json PATH`` everywhere: write ``what`` as JSON to PATH ('-' for standard output)."""
    parser.add_argument("--json", metavar="PATH", nargs="?", const="-", default=None,
                        help=f"write {what} as JSON to PATH ('-' or no value: standard output)")


def write_json(obj, path: str) -> None:
    """What ``--json PATH`` asked for: ``obj`` as indented JSON to PATH (atomically) or stdout ('-')."""
    import json
    from pathlib import Path

    text = json.dumps(obj, indent=2)
    if path == "-":
        print(text)
        return
    from foldcnn.checkpoints import atomic_write

    atomic_write(Path(path), (text + "\n").encode())
