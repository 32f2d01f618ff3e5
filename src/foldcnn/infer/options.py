"""PredictOptions: every inference option, declared once, validated once.

The Predictor, the Ray engine, the server and ``foldcnn eval`` all take one ``PredictOptions``; the
command-line flags of ``predict``, ``serve``, ``eval`` and ``fold`` are generated from its fields
(foldcnn.cli.options), so a new option reaches every entry point or none. An entry point that
cannot honour an option lists it in its ``UNSUPPORTED`` table with the reason, and
:func:`check_supported` refuses a non-default value with that sentence instead of ignoring it.

    opts = PredictOptions(backend="ort", precision="int8", batch_size=512)
    p = Predictor.from_checkpoint("runs/lol-f4/checkpoint", opts)
    p2 = Predictor.from_checkpoint("runs/lol-f4/checkpoint", opts.replace(threads=1))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from foldcnn.errors import UsageError
from foldcnn.options import option as _opt
from foldcnn.precision import PRECISIONS

__all__ = [
    "BACKEND_NAMES", "DECODERS", "DEVICES", "ON_ERROR", "PARTIAL_MODES", "PRECISIONS", "RESIZE_MODES", "PredictOptions",
    "check_supported", "option_fields",
]

# The names a user can pick; "auto" times the usable backends and keeps the fastest. Backends
# registered later (foldcnn.backends.register_backend) are accepted by name too.
BACKEND_NAMES = ("auto", "eager", "compile", "ort", "openvino", "cuda-graphs")
DEVICES = ("cpu", "cuda")
PARTIAL_MODES = ("pad", "fallback")
ON_ERROR = ("raise", "skip")
RESIZE_MODES = ("bilinear", "nearest")
DECODERS = ("auto", "processes", "threads")


@dataclass(frozen=True)
class PredictOptions:
    """How images are run through a (folded) model. Every field has a default that works on a CPU.

    ``partial``: the last, partial fold of a stream is zero-padded (``"pad"``) or its images go
    through the unfolded ``fallback`` checkpoint (``"fallback"``); None picks fallback when a
    fallback is given, else pad. ``workers``: decoders ahead of the model (None: the engine's
    default: for the Predictor one process per core, or 2 threads). ``decoders``: image files
    and the key-frame segments of long videos are decoded in forked processes or in threads (auto:
    processes where fork exists). ``resize_mode`` None: bilinear for images, nearest
    neighbour for video frames (as training reads video).
    """

    backend: str = _opt("eager", "inference engine; auto measures the usable ones briefly and keeps the fastest",
                        choices=BACKEND_NAMES)
    precision: str = _opt("fp32", "numeric precision; int8 is calibrated on the checkpoint's stored images",
                          choices=PRECISIONS)
    device: str = _opt("cpu", "where the model runs", choices=DEVICES)
    batch_size: int = _opt(1024, "images per model call (rounded down to a multiple of the fold f)")
    threads: int | None = _opt(None, "the engine's compute threads (default: all cores)")
    workers: int | None = _opt(None, "decoders ahead of the model (0: decode in the calling thread; default: "
                                     "one per core for processes, 2 threads)")
    decoders: str = _opt("auto", "where image files and long videos (a key-frame segment per process) are "
                                 "decoded: forked processes (no GIL), threads, or auto (processes for runs of "
                                 "many files and videos of 512+ frames where fork exists, else threads)",
                         choices=DECODERS)
    partial: str | None = _opt(None, "the last, partial fold: zero-pad it, or run its images through --fallback "
                                     "(default: fallback when --fallback is given, else pad)", choices=PARTIAL_MODES)
    fallback: str | None = _opt(None, "unfolded (fold=1) checkpoint of the same task for --partial fallback",
                                metavar="CKPT")
    on_error: str = _opt("raise", "unreadable inputs: stop with an error naming them, or skip them and list them",
                         choices=ON_ERROR)
    resize: bool = _opt(True, "resize inputs of another size to the model's (off: refuse them)", flag="--no-resize")
    resize_mode: str | None = _opt(None, "how inputs of another size are resized (default: bilinear for images, "
                                         "nearest for video frames)", choices=RESIZE_MODES)
    stride: int = _opt(1, "video: classify every N-th frame")
    keyframes: bool = _opt(False, "video: decode and classify only the key frames (every N-th of them with "
                                  "--stride): a fast, coarse pass")
    max_pixels: int | None = _opt(None, "largest decoded image, width x height (default: no limit)")
    select_seconds: float | None = _opt(None, "with --backend auto: seconds to time each candidate (default 10)")

    def __post_init__(self) -> None:
        _check_choice("backend", self.backend, None)  # any registered name; checked when it is built
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("partial", self.partial, (None, *PARTIAL_MODES))
        _check_choice("on_error", self.on_error, ON_ERROR)
        _check_choice("resize_mode", self.resize_mode, (None, *RESIZE_MODES))
        _check_choice("decoders", self.decoders, DECODERS)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("stride", self.stride, 1)
        if self.threads is not None:
            _check_int("threads", self.threads, 1)
        if self.workers is not None:
            _check_int("workers", self.workers, 0)
        if self.max_pixels is not None:
            _check_int("max_pixels", self.max_pixels, 1)
        if self.select_seconds is not None and not (isinstance(self.select_seconds, (int, float))
                                                    and self.select_seconds > 0):
            raise UsageError(f"select_seconds must be a number > 0, got {self.select_seconds!r}")
        for name in ("resize", "keyframes"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.fallback is not None and not isinstance(self.fallback, (str, bytes)) and \
                not hasattr(self.fallback, "__fspath__") and not hasattr(self.fallback, "fold"):
            raise UsageError(f"fallback must be a checkpoint path or an unfolded model, got {self.fallback!r}")
        if self.partial == "fallback" and self.fallback is None:
            raise UsageError("the partial mode 'fallback' needs --fallback CKPT (fallback= in Python): an unfolded "
                             "(fold=1) checkpoint of the same task for the images of the last, partial fold")
        if self.partial == "pad" and self.fallback is not None:
            raise UsageError("a fallback model is only used with partial='fallback' (--partial fallback); "
                             "drop --fallback or pass --partial fallback")
        if self.precision == "int8" and self.device != "cpu":
            raise UsageError("precision int8 runs on the CPU (ONNX Runtime); use device 'cpu' or another precision")

    @property
    def partial_mode(self) -> str:
        """``partial`` with None resolved: fallback when a fallback model is given, else pad."""
        return self.partial or ("fallback" if self.fallback is not None else "pad")

    def replace(self, **changes: Any) -> PredictOptions:
        """A validated copy with ``changes`` (field names)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise UsageError(f"unknown prediction option(s) {', '.join(unknown)}; the options are "
                             f"{', '.join(f.name for f in fields(self))}")
        return dataclasses.replace(self, **changes)

    def non_default(self) -> dict[str, Any]:
        """The fields set to something other than their default."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings (recorded next to results)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
        return out


def option_fields() -> tuple[dataclasses.Field, ...]:
    return fields(PredictOptions)


def check_supported(options: PredictOptions, unsupported: dict[str, str], engine: str) -> None:
    """Refuse every option ``engine`` cannot honour that is set away from its default.

    ``unsupported`` maps a field name to the reason (one clause): an option is never ignored.
    """
    bad = [(name, why) for name, why in unsupported.items() if name in options.non_default()]
    if bad:
        parts = "; ".join(f"{name.replace('_', '-')}: {why}" for name, why in bad)
        raise UsageError(f"{engine} cannot honour {', '.join(n for n, _ in bad)} ({parts})")


def _check_choice(name: str, value, choices) -> None:
    if choices is None:
        if not isinstance(value, str) or not value:
            raise UsageError(f"{name} must be a name, got {value!r}")
        return
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def _check_int(name: str, value, minimum: int) -> None:
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"{name} must be an int >= {minimum}, got {value!r}")
