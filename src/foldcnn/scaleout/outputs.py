"""Write the results of a Ray run: predictions as Parquet / CSV, failed files as CSV."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["write_failed", "write_predictions"]


def write_predictions(out: Path, rows: dict[str, np.ndarray], sources, class_names, formats) -> dict[str, str]:
    """Per-image rows (numpy columns source_id, frame, class_index, confidence) ->
    ``out/predictions.{fmt}`` with columns source, frame, class_index, class_name, confidence,
    sorted by (source, frame): file ids are numbered in path order, so sorting ids sorts paths.
    Each file is written beside its final name and renamed, so a reader never sees half a file."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    order = np.lexsort((rows["frame"], rows["source_id"]))
    src = np.asarray(sources, dtype=object)
    names = np.asarray(class_names, dtype=object)
    table = pa.table({
        "source": pa.array(src[rows["source_id"][order]].tolist() if len(order) else [], pa.string()),
        "frame": pa.array(rows["frame"][order], pa.int64()),
        "class_index": pa.array(rows["class_index"][order], pa.int64()),
        "class_name": pa.array(names[rows["class_index"][order]].tolist() if len(order) else [], pa.string()),
        "confidence": pa.array(rows["confidence"][order], pa.float32()),
    })
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    writers = {"parquet": lambda p: pq.write_table(table, p), "csv": lambda p: pacsv.write_csv(table, p)}
    for fmt in formats:
        path = out / f"predictions.{fmt}"
        tmp = path.with_name(path.name + ".tmp")
        writers[fmt](str(tmp))
        os.replace(tmp, path)
        paths[fmt] = str(path)
    return paths


def write_failed(out: Path, failed: list[dict]) -> str:
    """``out/failed.csv``: one row (source, reason) per file that could not be read (header
    only when none failed, so a script can always read it)."""
    import csv

    path = out / "failed.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["source", "reason"])
        w.writeheader()
        w.writerows(failed)
    return str(path)
