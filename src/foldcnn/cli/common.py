"""What every CLI module shares: the user-facing error and argument parsers."""

from __future__ import annotations


# The backend names predict and serve offer (foldcnn.backends registers them; "auto" times them).
BACKEND_CHOICES = ("auto", "eager", "compile", "ort", "openvino", "cuda-graphs")
PRECISION_CHOICES = ("fp32", "bf16", "fp16", "int8")


class CLIError(Exception):
    """An error whose message is meant for the user (printed without a traceback)."""


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
