"""Scrape rows and events to files: CSV, JSONL or Parquet by suffix; ``-`` is JSONL on stdout.

Rows are written as they come (CSV and JSONL flushed every ``flush_rows`` rows and whenever
the caller asks, so a live scrape's readings reach the reader at once); a file is written to
``PATH.partial`` and renamed when the run ends, also after a broken stream (its rows up to the
break are the output), never left truncated under its own name by a crash.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

from foldcnn.errors import UsageError

__all__ = ["ROW_FORMATS", "TableWriter"]

ROW_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
PARQUET_ROWS = 8192  # rows per Parquet row group


def _cell(v) -> str:
    return "" if v is None else str(v)


class TableWriter:
    """Dict rows with fixed ``columns`` to ``path`` (format by suffix, ``-``: JSONL to stdout)."""

    def __init__(self, path: str | os.PathLike, columns, formats=ROW_FORMATS, stream=None) -> None:
        self.columns = tuple(columns)
        self.rows = 0
        self.to_stdout = str(path) == "-"
        self._buffer: list[dict] = []
        if self.to_stdout:
            self.format, self._file, self.path = "jsonl", stream or sys.stdout, None
            return
        self.path = Path(path)
        fmt = formats.get(self.path.suffix.lower())
        if fmt is None:
            raise UsageError(f"cannot tell the format of {self.path}: name it "
                             f"{' or '.join('*' + s for s in formats)}" + ("" if "-" in formats else " (or -)"))
        self.format = fmt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        if fmt == "parquet":
            import pyarrow  # noqa: F401 - fail now, before any work, when it is missing

            self._file, self._parquet = None, None
            return
        self._file = open(self._tmp, "w", newline="", encoding="utf-8")
        if fmt == "csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(self.columns)

    def write(self, row: dict) -> None:
        if self.format == "csv":
            self._csv.writerow([_cell(row[c]) for c in self.columns])
        elif self.format == "jsonl":
            self._file.write(json.dumps({c: row[c] for c in self.columns}) + "\n")
        else:
            self._buffer.append({c: row[c] for c in self.columns})
            if len(self._buffer) >= PARQUET_ROWS:
                self._write_parquet()
        self.rows += 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def _write_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self._buffer)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(str(self._tmp), table.schema)
        self._parquet.write_table(table.cast(self._parquet.schema))
        self._buffer = []

    def close(self, ok: bool = True) -> None:
        """Finish the file and give it its name; with ``ok=False`` (a run that failed before its
        end, other than a broken stream) leave it as ``PATH.partial``."""
        if self.to_stdout:
            self._file.flush()
            return
        if self.format == "parquet":
            if self._buffer or self._parquet is None:
                if not self._buffer:  # no rows: an empty table with the columns
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    pq.write_table(pa.table({c: [] for c in self.columns}), str(self._tmp))
                else:
                    self._write_parquet()
            if self._parquet is not None:
                self._parquet.close()
        elif not self._file.closed:
            self._file.close()
        if ok:
            os.replace(self._tmp, self.path)
