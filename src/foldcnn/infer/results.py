"""What prediction returns: per-image :class:`Prediction`, run statistics, and CSV / JSONL writers."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from foldcnn.errors import UsageError

__all__ = [
    "COLUMNS",
    "CONFIDENCE_DECIMALS",
    "OUTPUT_FORMATS",
    "RESULT_COLUMNS",
    "PredictStats",
    "Prediction",
    "PredictionWriter",
    "SkippedInput",
    "result_row",
    "round_confidence",
    "write_predictions",
]

OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
# The one result schema: every writer (Predictor CSV/JSONL, the Ray engine's Parquet/CSV, the
# server's JSON) emits these columns, in this order, built by result_row().
RESULT_COLUMNS = ("index", "source", "frame", "class_name", "class_index", "confidence")
COLUMNS = RESULT_COLUMNS  # the older name
CONFIDENCE_DECIMALS = 6


def round_confidence(confidence) -> float:
    """The one rounding of a confidence written anywhere: a Python float, 6 decimals."""
    return round(float(confidence), CONFIDENCE_DECIMALS)


def result_row(index: int, source, frame, class_name: str, class_index: int, confidence) -> dict:
    """One result in the shared schema (keys in RESULT_COLUMNS order).

    ``index``: position in the expanded input list (int); ``source``: the file (str) or None;
    ``frame``: the video frame number (int), None for images (never -1); ``class_index`` int;
    ``confidence`` rounded by :func:`round_confidence`.
    """
    return {"index": int(index), "source": None if source is None else str(source),
            "frame": None if frame is None else int(frame), "class_name": str(class_name),
            "class_index": int(class_index), "confidence": round_confidence(confidence)}


@dataclass(frozen=True, slots=True)
class Prediction:
    """The result for one input image.

    ``index`` is the image's position in the input stream (files that were skipped count too, so
    it maps back to the input list); ``source`` is the file it came from (None for arrays);
    ``frame`` is the video frame number (None for images); ``probabilities`` is the softmax over
    the model's K classes, float32 (K,).
    """

    index: int
    source: str | None
    frame: int | None
    class_index: int
    class_name: str
    confidence: float
    probabilities: np.ndarray

    def to_dict(self, probabilities: bool = False) -> dict:
        """The row every writer emits (:func:`result_row`), optionally with the probabilities."""
        d = result_row(self.index, self.source, self.frame, self.class_name, self.class_index, self.confidence)
        if probabilities:
            d["probabilities"] = [float(v) for v in self.probabilities]
        return d


@dataclass(frozen=True, slots=True)
class SkippedInput:
    """An input that gave no prediction (``on_error="skip"``): where it was and why."""

    index: int
    source: str | None
    reason: str


@dataclass
class PredictStats:
    """What one predict call did. Counts are images unless named otherwise.

    ``padding_waste`` = padded images / image slots run through the model (folded inputs x f).
    ``seconds_decode`` is the time the model loop waited for decoded input (decoding itself
    overlaps with the model in worker threads or processes, so this is the part that was not
    hidden); ``seconds_decode_work`` the decoders' own time summed over them (image files);
    ``seconds_write`` the time the caller spent with the results (writing rows) between batches.
    """

    backend: str = ""
    precision: str = ""
    fold: int = 1
    batch_size: int = 0
    images: int = 0
    folded_inputs: int = 0
    padded_images: int = 0
    fallback_images: int = 0
    skipped: int = 0
    seconds_total: float = 0.0
    seconds_model: float = 0.0
    seconds_decode: float = 0.0
    seconds_decode_work: float = 0.0
    seconds_write: float = 0.0
    decoders: str = ""  # "processes", "threads" or "inline": what the options asked for
    workers: int = 0
    images_decoded_in_processes: int = 0  # what went to processes (short runs and videos stay in threads)
    graph_cache: dict | None = None  # ONNX engines: whether the graph came from the cache (see backends.graph_cache)
    backend_selection: dict | None = None
    skipped_inputs: list[SkippedInput] = field(default_factory=list, repr=False)
    ignored_files: list[str] = field(default_factory=list, repr=False)  # non-image files in input folders
    # Videos whose decoding stopped early (truncated, corrupt mid-stream): their earlier frames have rows.
    incomplete_inputs: list[SkippedInput] = field(default_factory=list, repr=False)

    @property
    def padding_waste(self) -> float:
        slots = self.folded_inputs * self.fold
        return self.padded_images / slots if slots else 0.0

    @property
    def images_per_s(self) -> float:
        """End to end: decoding, batching, model and result objects."""
        return self.images / self.seconds_total if self.seconds_total > 0 else 0.0

    @property
    def model_images_per_s(self) -> float:
        """Images per second of time spent inside the backend's run() alone."""
        return self.images / self.seconds_model if self.seconds_model > 0 else 0.0

    def stages(self) -> dict[str, dict[str, float]]:
        """Per stage (read/decode, model, write): seconds on the caller's clock, images/s over
        them and share of wall time. read/decode counts the waits for decoded input (what
        decoding in the background did not hide); other = batching, softmax, the rest. With
        decoding workers the engine runs in its own thread, one batch ahead, so its time overlaps
        the others and the shares can add up to more than 1."""
        wall = self.seconds_total
        parts = {"read/decode": self.seconds_decode, "model": self.seconds_model, "write": self.seconds_write}
        parts["other"] = max(0.0, wall - sum(parts.values()))
        return {name: {"seconds": s, "images_per_s": self.images / s if s > 0 else 0.0,
                       "share": s / wall if wall > 0 else 0.0} for name, s in parts.items()}

    @property
    def decode_bound(self) -> bool:
        """The model waited for decoded images longer than it computed (over a full batch or more:
        a run of a few images waits for its first decode whatever the pipeline)."""
        return self.images >= max(1, self.batch_size) and self.seconds_decode > self.seconds_model

    def to_dict(self) -> dict:
        return {
            "backend": self.backend, "precision": self.precision, "fold": self.fold,
            "batch_size": self.batch_size, "images": self.images, "folded_inputs": self.folded_inputs,
            "padded_images": self.padded_images, "padding_waste": self.padding_waste,
            "fallback_images": self.fallback_images, "skipped": self.skipped,
            "skipped_inputs": [{"index": s.index, "source": s.source, "reason": s.reason}
                               for s in self.skipped_inputs],
            "incomplete_inputs": [{"index": s.index, "source": s.source, "reason": s.reason}
                                  for s in self.incomplete_inputs],
            "ignored_files": list(self.ignored_files), "seconds_total": self.seconds_total, "seconds_model": self.seconds_model,
            "seconds_decode": self.seconds_decode, "seconds_decode_work": self.seconds_decode_work,
            "seconds_write": self.seconds_write, "decoders": self.decoders, "workers": self.workers,
            "images_decoded_in_processes": self.images_decoded_in_processes,
            "graph_cache": self.graph_cache,
            "stages": self.stages(), "images_per_s": self.images_per_s,
            "model_images_per_s": self.model_images_per_s, "backend_selection": self.backend_selection,
        }


def _cell(v) -> str:
    return "" if v is None else str(v)


class PredictionWriter:
    """Stream predictions to ``path`` as CSV or JSONL (format from the extension), one row each.

    Columns: RESULT_COLUMNS (index, source, frame (video frame number; empty in CSV and null in
    JSONL for images), class_name, class_index, confidence), rows built by :func:`result_row`. Rows go to ``path + ".partial"``, renamed to ``path`` by
    ``close()``; a run that fails leaves only the ``.partial`` file, never a truncated ``path``.
    """

    def __init__(self, path: str | os.PathLike, format: str | None = None) -> None:
        self.path = Path(path)
        fmt = format or OUTPUT_FORMATS.get(self.path.suffix.lower())
        if fmt not in OUTPUT_FORMATS.values():
            raise UsageError(f"cannot tell the output format of {self.path}: name it *.csv or *.jsonl "
                             f"(or pass format='csv' / 'jsonl')")
        self.format = fmt
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self._file = open(self._tmp, "w", newline="", encoding="utf-8")
        if fmt == "csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(RESULT_COLUMNS)

    def write(self, p: Prediction) -> None:
        self.write_row(p.to_dict())

    def write_row(self, row: dict) -> None:
        """One :func:`result_row` dict (what other engines, e.g. Ray, write through this class)."""
        if self.format == "csv":
            self._csv.writerow([_cell(row[c]) for c in RESULT_COLUMNS])
        else:
            self._file.write(json.dumps({c: row[c] for c in RESULT_COLUMNS}) + "\n")
        self.rows += 1

    def write_batch(self, indices, sources, frames, class_indices, confidences, class_names) -> None:
        """Rows for a batch given as columns (the same rows ``write`` gives for each image)."""
        names = [class_names[c] for c in class_indices]
        conf = [round(float(c), 6) for c in confidences]
        if self.format == "csv":
            self._csv.writerows(zip(indices, map(_cell, sources), map(_cell, frames), names, class_indices, conf))
        else:
            self._file.writelines(json.dumps({"index": i, "source": s, "frame": f, "class_name": n, "class_index": c,
                                              "confidence": v}) + "\n"
                                  for i, s, f, n, c, v in zip(indices, sources, frames, names, class_indices, conf))
        self.rows += len(names)

    def write_all(self, preds: Iterable[Prediction]) -> int:
        for p in preds:
            self.write(p)
        return self.rows

    def close(self, ok: bool = True) -> None:
        """Finish the file; with ``ok=False`` (a failed run) keep only the ``.partial`` file."""
        if self._file.closed:
            return
        self._file.close()
        if ok:
            os.replace(self._tmp, self.path)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(ok=exc_type is None)


def write_predictions(preds: Iterable[Prediction], path: str | os.PathLike, format: str | None = None) -> int:
    """Write ``preds`` (any iterable, consumed lazily) to a CSV / JSONL file; returns the row count."""
    with PredictionWriter(path, format) as w:
        return w.write_all(preds)
