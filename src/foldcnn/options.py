"""Config fields that carry their own command-line flag: one declaration per option.

A frozen config dataclass (``PredictOptions``, ``TrainConfig``, ...) declares each field with
:func:`option`, giving its help text and, where the flag is not ``--field-name``, its flag. The
command line (foldcnn.cli.options.add_options) generates the flags from these fields, so an
option is declared in exactly one place and every command that takes the config takes it alike.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, field

__all__ = ["option", "flag_of", "is_cli_option"]


def option(default=MISSING, help: str = "", *, choices=None, flag: str | None = None, metavar: str | None = None,
           cli: bool = True) -> Field:
    """A dataclass field with what its command-line flag needs.

    ``flag`` overrides ``--field-name`` (for a boolean that defaults to True, name the ``--no-...``
    switch); ``cli=False`` keeps the field out of the command line (set in Python only)."""
    return field(default=default,
                 metadata={"help": help, "choices": choices, "flag": flag, "metavar": metavar, "cli": cli})


def flag_of(f: Field) -> str:
    """The command-line spelling of a field: its own ``flag`` or ``--field-name``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def is_cli_option(f: Field) -> bool:
    return f.metadata.get("cli", True)
