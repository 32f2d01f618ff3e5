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

__all__ = ["ROW_FORMATS", "COMMIT_FRAMES", "ScrapeJournal", "TableWriter"]

ROW_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
PARQUET_ROWS = 8192  # rows per Parquet row group
COMMIT_FRAMES = 64  # frames between two commits of the journal (each an fsync of the outputs)
JOURNAL_FORMAT = "foldcnn-scrape-journal"


def _cell(v) -> str:
    return "" if v is None else str(v)


class TableWriter:
    """Dict rows with fixed ``columns`` to ``path`` (format by suffix, ``-``: JSONL to stdout)."""

    def __init__(self, path: str | os.PathLike, columns, formats=ROW_FORMATS, stream=None, *,
                 keep_partial: bool = False) -> None:
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
        if keep_partial and self._tmp.exists():  # a resumed run: ScrapeJournal cuts it back and appends
            self._file = open(self._tmp, "a", newline="", encoding="utf-8")
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

    def durable_bytes(self) -> int:
        """Flush and fsync the rows written so far; the bytes of the partial file that hold them."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._file.tell()

    def reopen(self, committed_bytes: int, rows: int) -> None:
        """Continue a partial file written by a killed run: cut what came after its last commit
        (a torn row) and append after it (CSV and JSONL only)."""
        self._file.close()
        with open(self._tmp, "r+b") as f:
            f.truncate(committed_bytes)
        self._file = open(self._tmp, "a", newline="", encoding="utf-8")
        if self.format == "csv":
            self._csv = csv.writer(self._file)
        self.rows = rows

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


class ScrapeJournal:
    """``OUT.journal``: how much of the rows (and events) files a scrape has made durable, so that a
    killed run can be resumed (``--resume``) to the bytes an uninterrupted run writes.

    Commits happen at frame boundaries (every COMMIT_FRAMES frames, and at the end): both partial
    files are fsynced and their byte and row counts written to the journal atomically. A resumed
    run is checked against the journal's ``fingerprint`` (videos, layout, models, options), cuts
    each file back to its committed bytes and appends from there; the caller runs the same scrape
    again and skips the first ``skip_rows`` rows and ``skip_events`` events, which are the ones
    already written (the same frames give the same folds, so the same answers)."""

    def __init__(self, rows: TableWriter, events: TableWriter | None, fingerprint: dict, *, resume: bool) -> None:
        if rows.path is None or rows.format == "parquet":
            raise UsageError("--resume needs a file of rows that can be appended to: --out a .csv or .jsonl "
                             "(Parquet and standard output cannot be resumed)")
        self.writers = [w for w in (rows, events) if w is not None]
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.path = rows.path.with_name(rows.path.name + ".journal")
        self.skip_rows = self.skip_events = 0
        if resume:
            self._resume(rows, events)
        self.commit()

    def _resume(self, rows: TableWriter, events: TableWriter | None) -> None:
        if not self.path.exists():
            raise UsageError(f"nothing to resume: {self.path} does not exist (a run without --resume writes it); "
                             "run without --resume")
        try:
            state = json.loads(self.path.read_text())
            if state.get("format") != JOURNAL_FORMAT:
                raise ValueError("not a scrape journal")
            counts = [(int(b), int(n)) for b, n in state["files"]]
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{self.path} is damaged ({e}); run without --resume to start again") from None
        if state.get("fingerprint") != self.fingerprint:
            old, new = state.get("fingerprint") or {}, self.fingerprint
            what = ", ".join(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
            raise UsageError(f"{rows.path} was written by another scrape (its {what} differ); resume with the same "
                             "videos, layout, models and options, or run without --resume")
        if len(counts) != len(self.writers):
            raise UsageError(f"{self.path} records {len(counts)} output file(s), this run writes "
                             f"{len(self.writers)} (--events given or not); use the same flags to resume")
        for w, (committed, n) in zip(self.writers, counts):
            if not w._tmp.exists() or w._tmp.stat().st_size < committed:
                raise UsageError(f"{w._tmp} is missing or shorter than {self.path} says; run without --resume")
            w.reopen(committed, n)
        self.skip_rows = counts[0][1]
        self.skip_events = counts[1][1] if events is not None else 0

    def commit(self) -> None:
        """Make every row and event written so far durable and record it."""
        files = [(w.durable_bytes(), w.rows) for w in self.writers]
        body = {"format": JOURNAL_FORMAT, "version": 1, "files": files, "fingerprint": self.fingerprint}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(body))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def finish(self) -> None:
        """The run ended and its files have their names: the journal goes."""
        self.path.unlink(missing_ok=True)
