"""Progress bars for every long job: tqdm on a terminal, sparse lines in a log file.

On a terminal tqdm redraws one line in place. When its stream is a file or a pipe (a job's log,
CI), each redraw is a new line, and a training run wrote thousands of them. Off a terminal the
bars here therefore print at most once every ``LOG_INTERVAL_S`` seconds (plus the last state).
In a Jupyter notebook they are tqdm's widgets, unchanged.
"""

from __future__ import annotations

import sys

__all__ = ["LOG_INTERVAL_S", "progress_bar"]

LOG_INTERVAL_S = 30.0


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)``, with ``mininterval`` raised to LOG_INTERVAL_S when the bar's
    stream (``file``, default stderr) is not a terminal and the caller did not set it."""
    from tqdm.auto import tqdm

    notebook = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)
    stream = kwargs.get("file") or sys.stderr
    if not notebook and "mininterval" not in kwargs and not _is_terminal(stream):
        kwargs["mininterval"] = LOG_INTERVAL_S
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S)  # tqdm's default (10 s) is below it
    return tqdm(iterable, **kwargs)
