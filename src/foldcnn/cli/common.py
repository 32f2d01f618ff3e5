"""What every CLI module shares: the user-facing error and argument parsers."""

from __future__ import annotations

import argparse

from foldcnn.errors import FoldcnnError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it says something: not for a flag that is off (False), an
    option with no default (None), or help that already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False) or "default" in text:
            return text
        return super()._get_help_string(action)


class CLIError(FoldcnnError):
    """A command-line usage error (a FoldcnnError: printed as one sentence, exit status 2)."""


def model_help(name: str) -> str:
    """The help text a ModelSpec field declares, for commands that take that flag by hand (called
    while their parser is built: ModelSpec imports torch, which the slim commands never load)."""
    from dataclasses import fields

    from foldcnn.models.spec import ModelSpec

    return next(f.metadata["help"] for f in fields(ModelSpec) if f.name == name)


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


def parse_names(text: str | None, flag: str) -> tuple[str, ...] | None:
    """'fp32,int8' -> ('fp32', 'int8'): a comma list of names (the consumer checks them)."""
    if text is None:
        return None
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not names:
        raise CLIError(f"{flag} takes a comma-separated list, e.g. fp32,int8; got {text!r}")
    return names


def parse_pairs(text: str | None, flag: str) -> tuple[tuple[str, str], ...] | None:
    """'ort/fp32,openvino/int8' -> (('ort', 'fp32'), ('openvino', 'int8'))."""
    if text is None:
        return None
    pairs = [t.strip().split("/") for t in text.split(",") if t.strip()]
    if not pairs or any(len(p) != 2 or not all(p) for p in pairs):
        raise CLIError(f"{flag} takes backend/precision pairs like ort/fp32,ort/int8; got {text!r}")
    return tuple((a, b) for a, b in pairs)


def parse_words(text: str | None, flag: str) -> tuple[str, ...]:
    """"--backend ort --max-wait-ms 2" -> ('--backend', 'ort', '--max-wait-ms', '2'): shell words."""
    import shlex

    try:
        return tuple(shlex.split(text or ""))
    except ValueError as e:
        raise CLIError(f"{flag} takes shell words, e.g. '--backend ort'; {e} in {text!r}") from None
