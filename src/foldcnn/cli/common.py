"""What every CLI module shares: the user-facing error and argument parsers."""

from __future__ import annotations

from foldcnn.errors import FoldcnnError


class CLIError(FoldcnnError):
    """A command-line usage error (a FoldcnnError: printed as one sentence, exit status 2)."""


def parse_size(text: str | None, flag: str = "--input-size", example: str = "22x52") -> tuple[int, int] | None:
    """'24x48' -> (24, 48): two positive ints joined by 'x', in the order the flag documents."""
    if text is None:
        return None
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CLIError(f"{flag} must look like {example}; got {text!r}") from None
    if a < 1 or b < 1:
        raise CLIError(f"{flag} must be positive, got {text!r}")
    return a, b
