"""Run decode jobs in background threads, hand their results back in submission order.

Memory stays bounded: at most ``depth`` finished-or-running jobs wait ahead of the consumer.
Pillow, PyAV and torch release the GIL while they decode / convert, so a few threads overlap
decoding with the model running in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
_POLL_S = 0.05


def ordered_map(jobs: Iterator[Callable[[], T]], workers: int, depth: int | None = None) -> Iterator[T]:
    """Yield ``job()`` for every job of ``jobs``, in order.

    ``workers=0`` runs everything in the caller's thread. Otherwise one feeder thread draws jobs
    from ``jobs`` (the iterator itself may do work, e.g. decode a video) and submits them to
    ``workers`` threads; at most ``depth`` (default ``2 * workers``) submitted jobs wait ahead.
    A job with a true ``inline`` attribute (cheap work on data already in memory) is run in the
    caller's thread at its turn instead: measured here, handing such jobs to threads cost more
    CPU than they saved.
    An exception from a job or from ``jobs`` is raised here at its place in the order. Closing
    the returned iterator early stops the feeder and drops pending jobs.
    """
    if workers <= 0:
        for job in jobs:
            yield job()
        return
    depth = max(1, depth if depth is not None else 2 * workers)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="foldcnn-decode")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def feed() -> None:
        try:
            for job in jobs:
                if getattr(job, "inline", False):
                    if not put(("call", job)):
                        return
                    continue
                fut = pool.submit(job)
                if not put(("job", fut)):
                    fut.cancel()
                    return
            put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(("error", e))
        finally:
            close = getattr(jobs, "close", None)
            if close is not None:
                close()  # e.g. release an open video file when the consumer stopped early

    feeder = threading.Thread(target=feed, name="foldcnn-feeder", daemon=True)
    feeder.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value() if kind == "call" else value.result()
    finally:
        stop.set()
        while True:  # drop what was queued so the feeder cannot block on a full queue
            try:
                kind, value = q.get_nowait()
            except queue.Empty:
                break
            if kind == "job":
                value.cancel()
        feeder.join()
        pool.shutdown(wait=True, cancel_futures=True)
