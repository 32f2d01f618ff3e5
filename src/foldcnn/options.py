"""Config fields that carry their own command-line flag: one declaration per option.

A frozen config dataclass (``PredictOptions``, ``TrainConfig``, ...) declares each field with
:func:`option`, giving its help text and, where the flag is not ``--field-name``, its flag. The
command line (foldcnn.cli.options.add_options) generates the flags from these fields, so an
option is declared in exactly one place and every command that takes the config takes it alike.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, field

__all__ = ["PARSERS", "option", "flag_of", "is_cli_option"]


# How a flag's text becomes a field's value, for fields that are not a plain str/int/float; the
# command line (foldcnn.cli.options) holds one parser per name.
PARSERS = ("size", "fractions", "ints", "width_mult", "width_mults", "names", "pairs", "json_object", "words")


def option(default=MISSING, help: str = "", *, choices=None, flag: str | None = None, metavar: str | None = None,
           cli: bool = True, parse: str | None = None, default_factory=MISSING) -> Field:
    """A dataclass field with what its command-line flag needs.

    ``flag`` overrides ``--field-name`` (for a boolean that defaults to True, name the ``--no-...``
    switch); ``cli=False`` keeps the field out of the command line (set in Python only); ``parse``
    names how the flag's text is read (one of ``PARSERS``: 'size' is HxW, 'fractions' three
    comma-separated shares, 'ints', 'width_mults' and 'names' comma lists, 'pairs' a comma list of
    a/b pairs, 'json_object' a JSON object, 'words' shell words). A field without a
    default is a required flag."""
    if parse is not None and parse not in PARSERS:
        raise ValueError(f"parse must be one of {PARSERS}, got {parse!r}")  # a bug in a config class
    metadata = {"help": help, "choices": choices, "flag": flag, "metavar": metavar, "cli": cli, "parse": parse}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(f: Field) -> str:
    """The command-line spelling of a field: its own ``flag`` or ``--field-name``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def is_cli_option(f: Field) -> bool:
    return f.metadata.get("cli", True)
