"""Write the results of a Ray run: predictions as Parquet / CSV in the shared result schema
(foldcnn.infer.results), failed files as CSV."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from foldcnn.infer.results import RESULT_COLUMNS, PredictionWriter, result_row

__all__ = ["number_rows", "write_failed", "write_predictions"]


def number_rows(rows: dict[str, np.ndarray], failed_source_ids: np.ndarray, n_files: int) -> dict[str, np.ndarray]:
    """Put per-image rows (numpy columns source_id, frame, class_index, confidence; any order) in
    input order and add ``index``, numbered as the Predictor numbers its inputs: file by file in
    input order, an image (read or not) takes one position, a video one per decoded frame plus
    one when it failed part-way (the skipped input)."""
    order = np.lexsort((rows["frame"], rows["source_id"]))
    out = {k: v[order] for k, v in rows.items()}
    sid = out["source_id"].astype(np.int64)
    slots = np.bincount(sid, minlength=n_files) + np.bincount(np.asarray(failed_source_ids, np.int64),
                                                              minlength=n_files)
    offset = np.concatenate([[0], np.cumsum(slots)[:-1]]).astype(np.int64)
    first = np.searchsorted(sid, sid, side="left")  # sid is sorted: rank of a row within its file
    out["index"] = offset[sid] + np.arange(len(sid)) - first
    return out


def _result_rows(rows, sources, kinds, class_names) -> list[dict]:
    return [result_row(i, sources[s], None if kinds[s] == "image" else f, class_names[c], c, conf)
            for i, s, f, c, conf in zip(rows["index"].tolist(), rows["source_id"].tolist(), rows["frame"].tolist(),
                                        rows["class_index"].tolist(), rows["confidence"].tolist())]


def _write_parquet(path: str, result: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"index": pa.int64(), "source": pa.string(), "frame": pa.int64(), "class_name": pa.string(),
             "class_index": pa.int64(), "confidence": pa.float64()}  # result_row's Python types
    schema = pa.schema([(c, types[c]) for c in RESULT_COLUMNS])
    pq.write_table(pa.Table.from_pylist(result, schema=schema), path)


def write_predictions(out: Path, rows: dict[str, np.ndarray], sources, kinds, class_names,
                      formats) -> dict[str, str]:
    """Rows numbered by :func:`number_rows` -> ``out/predictions.{fmt}`` in the shared schema
    (RESULT_COLUMNS, :func:`foldcnn.infer.results.result_row`; frame null for images), in input
    order. CSV goes through the Predictor's own writer, so a local run and a Ray run of the
    same inputs give the same file. Each file is written beside its final name and renamed, so
    a reader never sees half a file."""
    result = _result_rows(rows, sources, kinds, class_names)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        path = out / f"predictions.{fmt}"
        if fmt == "csv":
            with PredictionWriter(path, "csv") as w:
                for row in result:
                    w.write_row(row)
        else:
            tmp = path.with_name(path.name + ".tmp")
            _write_parquet(str(tmp), result)
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
