"""The one exception base of foldcnn.

A :class:`FoldcnnError` is a *user* error: bad input, a bad option, a file from elsewhere. Its
message is one sentence that says what to fix, and the command line prints just that sentence and
exits with status 2. Any other exception escaping foldcnn is a bug in foldcnn (or in a model it
was handed) and keeps its traceback.

The subclasses that stand for a wrong argument also derive from the built-in class a caller would
expect (``ValueError``, ``TypeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "FoldcnnError", "MissingExtraError", "MissingInputError", "OutputExistsError", "UnknownNameError", "UsageError",
    "UsageTypeError",
]


class FoldcnnError(Exception):
    """An error whose message is meant for the user (printed without a traceback, exit status 2)."""


class UsageError(FoldcnnError, ValueError):
    """An argument or option with a value foldcnn cannot use; the message says which values it takes."""


class UsageTypeError(FoldcnnError, TypeError):
    """An argument of a type foldcnn cannot use; the message says what to pass instead."""


class UnknownNameError(FoldcnnError, KeyError):
    """A name (model, task, preset, backend) that is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingInputError(FoldcnnError, FileNotFoundError):
    """An input file, folder or glob that does not exist or holds nothing foldcnn can read."""


class OutputExistsError(FoldcnnError, FileExistsError):
    """An output that already exists and would be overwritten; the message names the flag that allows it."""


class MissingExtraError(FoldcnnError, ImportError):
    """An optional package that is not installed; the message names the ``pip install`` that adds it."""
