"""Outputs that survive a kill: rows go to ``OUT.partial``, and after each batch a journal
(``OUT.journal``, replaced atomically) records how many bytes of it are complete and the input
position of the last row. A kill at any moment leaves ``OUT.partial`` valid up to the journal's
byte count (a torn last row past it is cut off on resume); ``--resume`` reopens it there and the
Predictor skips every input up to that position. The finished file is renamed to ``OUT`` and the
journal removed, so a resumed run ends with the bytes an uninterrupted one writes.

    with ResumableWriter("out.csv", fingerprint={"model": ..., "inputs": [...]}, resume=True) as w:
        p.predict_to(w, inputs, resume_after=w.resume_after)

Rows are committed only where the Predictor's batches end: at a fold boundary of the current fold
stream or at its end, so the images after a commit fold exactly as they did in the first run.
Any engine that writes rows in input order with increasing ``index`` can use the class (write
rows, then ``commit(last_index)``); ``write_batch`` commits by itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from foldcnn.errors import FoldcnnError, UsageError
from foldcnn.infer.results import PredictionWriter

__all__ = ["JOURNAL_FORMAT", "OutputWriteError", "ResumableWriter", "ResumeMismatchError", "journal_path"]

JOURNAL_FORMAT = "foldcnn-predict-journal"


class ResumeMismatchError(UsageError):
    """``--resume`` on an output written for another model, other inputs or other options."""


class OutputWriteError(FoldcnnError, OSError):
    """The output cannot be written (full disk, no permission); what was committed stays valid."""


def journal_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".journal")


def _describe_difference(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    parts = []
    for k in keys[:3]:
        a, b = json.dumps(old.get(k))[:80], json.dumps(new.get(k))[:80]
        parts.append(f"{k}: {a} then, {b} now")
    return "; ".join(parts)


class ResumableWriter(PredictionWriter):
    """A :class:`PredictionWriter` (CSV / JSONL, same bytes) whose rows are committed batch by batch.

    ``fingerprint``: what the output depends on (model, inputs, options that change rows), JSON-ready;
    resuming an output with another fingerprint is refused naming what differs. ``resume=False``
    starts afresh (an old partial output is replaced). ``resume_after``: the input position of the
    last committed row (-1: none); the caller skips inputs up to it.
    """

    def __init__(self, path: str | os.PathLike, fingerprint: dict, *, resume: bool = False,
                 format: str | None = None, sync: bool = True) -> None:
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.journal = journal_path(path)
        self.sync = sync
        self.resume_after = -1
        state = self._read_journal(Path(path)) if resume else None
        try:
            if state is None:
                super().__init__(path, format)
                self._commit_state(-1)
                return
            self._reopen(path, format, state)
        except OSError as e:
            raise OutputWriteError(f"cannot write {path}: {e.strerror or e}") from None

    # ------------------------------------------------------------------------------ resuming
    def _read_journal(self, path: Path) -> dict | None:
        tmp = path.with_name(path.name + ".partial")
        if not self.journal.exists():
            if tmp.exists():
                raise ResumeMismatchError(f"{tmp} has no journal {self.journal.name} (it was written without "
                                          "one, or the journal was removed): its rows cannot be trusted; "
                                          "run without --resume to start again")
            if path.exists():
                raise ResumeMismatchError(f"{path} is complete (no {self.journal.name} beside it): nothing to resume; "
                                 "run without --resume to write it again")
            return None
        try:
            state = json.loads(self.journal.read_text())
            if state.get("format") != JOURNAL_FORMAT or not tmp.exists():
                raise ValueError("not a journal of this output")
            int(state["bytes"]), int(state["rows"]), int(state["last_index"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise ResumeMismatchError(f"{self.journal} is damaged or {tmp} is missing ({e}); run without "
                                      "--resume to start again") from None
        if state.get("fingerprint") != self.fingerprint:
            why = _describe_difference(state.get("fingerprint") or {}, self.fingerprint)
            raise ResumeMismatchError(f"{tmp} was written by another run ({why}); run with the same model, "
                                      "inputs and options to resume it, or without --resume to start again")
        if tmp.stat().st_size < int(state["bytes"]):
            raise ResumeMismatchError(f"{tmp} is shorter than its journal says ({tmp.stat().st_size} < "
                                      f"{state['bytes']} bytes): it was changed; run without --resume to start again")
        return state

    def _reopen(self, path, format: str | None, state: dict) -> None:
        """Open the partial output at its last committed byte, as PredictionWriter would have left it."""
        import csv

        from foldcnn.infer.results import OUTPUT_FORMATS

        self.path = Path(path)
        fmt = format or OUTPUT_FORMATS.get(self.path.suffix.lower())
        if fmt not in OUTPUT_FORMATS.values():
            raise UsageError(f"cannot tell the output format of {self.path}: name it *.csv or *.jsonl")
        self.format = fmt
        self._tmp = self.path.with_name(self.path.name + ".partial")
        with open(self._tmp, "r+b") as f:  # cut a torn row written after the last commit
            f.truncate(int(state["bytes"]))
        self._file = open(self._tmp, "a", newline="", encoding="utf-8")
        if fmt == "csv":
            self._csv = csv.writer(self._file)
        self.rows = int(state["rows"])
        self.resume_after = int(state["last_index"])
        self.resumed_rows = self.rows

    # ------------------------------------------------------------------------------- commits
    def _commit_state(self, last_index: int) -> None:
        self._file.flush()
        if self.sync:
            os.fsync(self._file.fileno())
        body = {"format": JOURNAL_FORMAT, "version": 1, "bytes": self._file.tell(), "rows": self.rows,
                "last_index": int(last_index), "fingerprint": self.fingerprint}
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(body))
            f.flush()
            if self.sync:
                os.fsync(f.fileno())
        os.replace(tmp, self.journal)
        self.resume_after = int(last_index)

    def commit(self, last_index: int) -> None:
        """Make every row written so far durable; ``last_index``: the input position of the last one."""
        try:
            self._commit_state(last_index)
        except OSError as e:
            raise self._write_error(e) from None

    def _write_error(self, e: OSError) -> OutputWriteError:
        return OutputWriteError(f"cannot write {self._tmp}: {e.strerror or e}; its first rows up to input "
                                f"{self.resume_after} are kept (see {self.journal.name}): free space and run again "
                                "with --resume")

    def write_batch(self, indices, sources, frames, class_indices, confidences, class_names) -> None:
        if not len(indices):
            return
        try:
            super().write_batch(indices, sources, frames, class_indices, confidences, class_names)
        except OSError as e:
            raise self._write_error(e) from None
        self.commit(indices[-1])

    def close(self, ok: bool = True) -> None:
        """Finish: rename the partial output to its name and drop the journal (``ok``); after a
        failure keep both, committed as far as the last whole batch."""
        if self._file.closed:
            return
        try:
            self._file.flush()
            self._file.close()
        except OSError:
            if ok:
                raise
            return
        if ok:
            os.replace(self._tmp, self.path)
            self.journal.unlink(missing_ok=True)
