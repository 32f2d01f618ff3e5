"""Command-line flags generated from the config dataclasses (PredictOptions, TrainConfig, ModelSpec,
DataSpec, RunOptions, FoldOptions), in one place: every command that runs a model (predict, serve,
eval, fold) or trains one (train, fold) takes the same options with the same spelling; a new option
reaches all of them or none. A field declares its flag (foldcnn.options.option); the help text lives
on the field and nowhere else.

Each command names the options it cannot honour (with the reason); those get no flag.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from dataclasses import MISSING, fields

from foldcnn.cli.common import (
    CLIError,
    parse_fractions,
    parse_ints,
    parse_model_kwargs,
    parse_names,
    parse_pairs,
    parse_size,
    parse_width_mult,
    parse_width_mults,
    parse_words,
)
from foldcnn.errors import UsageError
from foldcnn.infer.options import PredictOptions
from foldcnn.options import PARSERS, flag_of, is_cli_option

__all__ = ["add_json_flag", "add_options", "add_predict_options", "as_flags", "config_from_args", "flags_of",
           "option_values",
           "predict_options", "write_json_output"]

_TYPES = {"str": str, "int": int, "float": float}


def _dest(f) -> str:
    """Where a field's flag stores its value: the field's name, or the name its own flag spells
    (``precision`` under ``--train-precision`` is ``train_precision``, so that a command can also
    take an inference ``--precision``); a ``--no-x`` switch stores into the field's name."""
    flag = f.metadata.get("flag")
    return f.name if not flag or flag.startswith("--no-") else flag.lstrip("-").replace("-", "_")


def _type(f):
    """What argparse turns the flag's text into: the field's plain type, or the text for a field
    with a named parser (foldcnn.options.PARSERS), which :func:`option_values` applies so that its
    one-sentence error goes the way of every other usage error."""
    if f.metadata.get("parse") is not None:
        return str
    base = str(f.type).replace(" ", "").split("|")[0]
    return _TYPES.get(base, str)


def _default(f):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


# One parser per foldcnn.options.PARSERS name; each raises CLIError with one sentence naming the flag.
_PARSERS = {
    "size": lambda text, flag: parse_size(text, flag=flag, example="24x48 (height x width)"),
    "fractions": parse_fractions,
    "ints": parse_ints,
    "width_mult": parse_width_mult,
    "width_mults": parse_width_mults,
    "names": parse_names,
    "pairs": parse_pairs,
    "json_object": parse_model_kwargs,
    "words": parse_words,
}
assert set(_PARSERS) == set(PARSERS)


def add_options(parser: argparse.ArgumentParser, cls, *, unsupported: dict[str, str] | None = None,
                defaults: dict | None = None, group_title: str | None = None, only=None,
                flags: dict[str, str] | None = None, helps: dict[str, str] | None = None) -> None:
    """A flag for every command-line field of the config dataclass ``cls`` (foldcnn.options.option),
    except those in ``unsupported`` (name -> why) and, with ``only``, those not named there.

    ``defaults`` overrides a field's default for this command (shown in --help); a boolean field
    gets a switch (``--x`` for a False default, the ``--no-x`` its metadata names for a True one,
    ``--x/--no-x`` for an optional one). ``flags`` and ``helps`` respell a field's flag and reword its
    help for a command that holds two configs of one class (``foldcnn demo``'s ``--epochs-original``
    and ``--epochs-folded``, both TrainConfig.epochs); a respelled flag stores under its own name."""
    unsupported, defaults, flags, helps = unsupported or {}, defaults or {}, flags or {}, helps or {}
    names = {f.name for f in fields(cls)}
    unknown = sorted((set(unsupported) | set(defaults) | set(only or ()) | set(flags) | set(helps)) - names)
    if unknown:
        raise ValueError(f"not {cls.__name__} fields: {unknown}")  # a bug in the command's table
    group = parser.add_argument_group(group_title) if group_title else parser
    for f in fields(cls):
        if f.name in unsupported or not is_cli_option(f) or (only is not None and f.name not in only):
            continue
        default = defaults.get(f.name, _default(f))
        if f.metadata.get("parse") and isinstance(default, (tuple, list)):
            default = _as_text(f, default)  # shown as the flag spells it; option_values parses it back
        flag = flags.get(f.name) or flag_of(f)
        kwargs = {"dest": flag.lstrip("-").replace("-", "_") if f.name in flags else _dest(f),
                  "help": helps.get(f.name, f.metadata.get("help", ""))}
        if str(f.type).replace(" ", "") in ("bool|None", "None|bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, **kwargs)
        elif f.type == "bool" or isinstance(f.default, bool):
            group.add_argument(flag, action="store_false" if default else "store_true", **kwargs)
        else:
            kwargs.update(default=default, type=_type(f))
            if f.name not in defaults and f.default is MISSING and f.default_factory is MISSING:
                kwargs.update(required=True, default=None)
            for key in ("choices", "metavar"):
                if f.metadata.get(key):
                    kwargs[key] = f.metadata[key]
            group.add_argument(flag, **kwargs)


def option_values(args: argparse.Namespace, cls, given: dict | None = None) -> dict:
    """The values of the flags :func:`add_options` made for ``cls`` (the fields it gave flags),
    with ``given`` (field -> value, worked out by the command) in place of the flags' own."""
    given = given or {}
    return {**{f.name: _parsed(f, getattr(args, _dest(f))) for f in fields(cls)
               if is_cli_option(f) and hasattr(args, _dest(f)) and f.name not in given}, **given}


def _parsed(f, value):
    parse = f.metadata.get("parse")
    return _PARSERS[parse](value, flag_of(f)) if parse is not None and isinstance(value, str) else value


def flags_of(config) -> list[str]:
    """The command-line words that give every flag field of ``config`` its value (what a result
    records as the command that reproduces it): lists comma-joined, sizes HxW, shell words quoted."""
    words: list[str] = []
    for f in fields(config):
        value = getattr(config, f.name)
        if not is_cli_option(f) or value is None:
            continue
        if isinstance(value, bool):
            words += [flag_of(f)] if value != (f.default is True) else []
            continue
        words += [flag_of(f), _as_text(f, value)]
    return words


def _as_text(f, value) -> str:
    """A field's value as its flag spells it (what the field's parser reads back)."""
    import shlex

    parse = f.metadata.get("parse")
    if parse == "size":
        return "x".join(map(str, value))
    if parse == "words":
        return shlex.join(value)
    if isinstance(value, (tuple, list)):
        return ",".join("/".join(v) if isinstance(v, tuple) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_predict_options(parser: argparse.ArgumentParser, *, unsupported: dict[str, str] | None = None,
                        defaults: dict | None = None, group_title: str = "inference options") -> None:
    """A flag for every PredictOptions field except those in ``unsupported`` (name -> why)."""
    add_options(parser, PredictOptions, unsupported=unsupported, defaults=defaults, group_title=group_title)
    parser.set_defaults(_predict_unsupported=dict(unsupported or {}))


def predict_options(args: argparse.Namespace) -> PredictOptions:
    """The PredictOptions the parsed flags describe; an invalid combination is one sentence."""
    return config_from_args(PredictOptions, args)


def config_from_args(cls, args: argparse.Namespace, given: dict | None = None):
    """``cls`` built from its flags (:func:`option_values`, ``given`` in place of some); a value it
    refuses is one sentence naming the flag."""
    try:
        return cls(**option_values(args, cls, given))
    except UsageError as e:
        raise CLIError(as_flags(str(e), cls)) from None


def as_flags(message: str, cls=PredictOptions) -> str:
    """'batch_size must be ...' -> '--batch-size must be ...' for the command line."""
    for f in fields(cls):
        for spelled in (f"{f.name}=", f.name):
            if message.startswith(spelled + " ") or message.startswith(spelled + "="):
                return flag_of(f) + message[len(spelled):]
    return message


def add_json_flag(parser, *, what: str = "the results") -> None:
    """``--json [PATH]`` everywhere: write ``what`` as JSON to PATH ('-' or no value: standard
    output, instead of the table); write it with :func:`write_json_output`."""
    parser.add_argument("--json", metavar="PATH", nargs="?", const="-", default=None,
                        help=f"write {what} as JSON to PATH ('-' or no value: standard output)")


def write_json_output(obj, path: str) -> None:
    """What ``--json PATH`` writes: indented JSON to PATH (atomically), or to stdout for '-'."""
    text = json.dumps(obj, indent=2)
    if path == "-":
        print(text)
        return
    from foldcnn.checkpoints import atomic_write

    atomic_write(Path(path), (text + "\n").encode())
