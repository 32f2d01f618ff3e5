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


MODEL_KWARGS_HELP = ("JSON keyword arguments of the model's builder, e.g. '{\"num_classes\": 10}'; for a model "
                     "given as package.module:Name, \"input_shape\": [C, H, W] sets one image's shape where no "
                     "data gives it")


def parse_ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    """'1,2,4' -> (1, 2, 4): comma-separated integers >= 1 (None stays None)."""
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CLIError(f"{flag} takes comma-separated integers, e.g. 1,2,4; got {text!r}") from None
    if not vals or min(vals) < 1:
        raise CLIError(f"{flag} takes integers >= 1, got {text!r}")
    return vals


def parse_model_kwargs(text: str | None, flag: str = "--model-kwargs") -> dict:
    """'{"num_classes": 10}' -> {"num_classes": 10}: a JSON object of keyword arguments."""
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CLIError(f"{flag} must be a JSON object like '{{\"num_classes\": 10}}'; {e.msg} at character "
                       f"{e.pos} of {text!r}") from None
    if not isinstance(value, dict):
        raise CLIError(f"{flag} must be a JSON object like '{{\"num_classes\": 10}}', got {text!r}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}


def parse_fractions(text: str, flag: str, n: int = 3) -> tuple[float, ...]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1): ``n`` positive fractions (train, val, test) that sum to 1."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != n or min(vals) <= 0 or abs(sum(vals) - 1) > 1e-6:
        raise CLIError(f"{flag} must be {n} positive fractions (train,val,test) that sum to 1, like 0.8,0.1,0.1; "
                       f"got {text!r}")
    return vals


WIDTH_MULT_HELP = ("every hidden width x this multiplier, relative to the original's (a folded model's default is "
                   "sqrt(fold), the paper's; below 1 at fold 1: a narrower CNN)")


def parse_width_mult(value: str | float | None, flag: str = "--width-mult") -> float | None:
    """'0.5' -> 0.5: a positive width multiplier (None stays None: the default, sqrt(fold))."""
    if value is None:
        return None
    try:
        w = float(value)
    except ValueError:
        w = float("nan")
    if not w > 0 or w == float("inf"):
        raise CLIError(f"{flag} takes positive numbers like 0.5 or 1.41 (a multiple of the original's widths), "
                       f"got {value!r}")
    return w


def parse_width_mults(text: str | None, flag: str = "--width-mults") -> tuple[float, ...] | None:
    """'0.5,1,2' -> (0.5, 1.0, 2.0); None stays None."""
    if text is None:
        return None
    vals = tuple(parse_width_mult(v.strip(), flag) for v in text.split(",") if v.strip())
    if not vals:
        raise CLIError(f"{flag} takes comma-separated positive numbers like 0.5,1,2; got {text!r}")
    return vals
