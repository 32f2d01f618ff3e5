"""Run decode jobs in background threads or processes, hand their results back in submission order.

Memory stays bounded: at most ``depth`` finished-or-running jobs wait ahead of the consumer.
Threads suit jobs whose work releases the GIL (large images, PyAV); many small files spend most
of their time in Python (Pillow parses PNG chunks in Python), so jobs that can run in another
process (``job.remote``) go to a process pool when one is given.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from foldcnn.background import put_unless_stopped
from foldcnn.errors import FoldcnnError

__all__ = ["DecoderDiedError", "LazyProcessPool", "ordered_map", "process_pool", "resolve_remote"]

T = TypeVar("T")


class DecoderDiedError(FoldcnnError, RuntimeError):
    """A decoding process died (crashed or was killed) while it held some inputs."""


# What a decoding process runs (decode_segment and the file jobs), loaded once by the fork server.
DECODER_MODULES = ["foldcnn.infer.sources"]


def process_pool(workers: int) -> ProcessPoolExecutor | None:
    """``workers`` decoding processes, or None where they are unavailable (then use threads).

    They are forked by a fork server: a clean, single-threaded process started once (per process,
    about 0.2 s) with the decoding modules preloaded, which imports no torch. Not forked from this
    process: a child forked while another thread held a video decoder frees that thread's
    objects at birth, and FFmpeg's scaler then waits forever for slice threads the child does
    not have (seen as a hung test). Not spawned either: a spawned worker would import torch
    again (about a second) and each worker would pay for it. As with any fork server (Python's
    default on Linux from 3.14), a script that decodes in processes keeps its top-level work
    under ``if __name__ == "__main__":``; the ``foldcnn`` command and ``python -m`` already do.
    """
    import multiprocessing as mp

    if workers < 1 or "forkserver" not in mp.get_all_start_methods() or os.name != "posix":
        return None
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(DECODER_MODULES)
    return ProcessPoolExecutor(workers, mp_context=context)


def ordered_map(jobs: Iterator[Callable[[], T]], workers: int, depth: int | None = None,
                processes: ProcessPoolExecutor | LazyProcessPool | None = None) -> Iterator[T]:
    """Yield ``job()`` for every job of ``jobs``, in order.

    ``workers=0`` runs everything in the caller's thread. Otherwise one feeder thread draws jobs
    from ``jobs`` (the iterator itself may do work, e.g. decode a video) and submits them to
    ``workers`` threads, or, for a job with a ``remote`` attribute ``(function, args)`` when
    ``processes`` is given, ``function(*args)`` to that process pool, whose answer the job's
    ``finish(answer)`` turns into the result; at most ``depth`` (default ``2 * workers``)
    submitted jobs wait ahead. A job with a true ``inline`` attribute (cheap work on data
    already in memory) is run in the caller's thread at its turn instead: measured,
    handing such jobs to threads cost more CPU than they saved.
    An exception from a job or from ``jobs`` is raised here at its place in the order; a
    process that dies takes no result with it: the jobs it broke are retried, each alone in a
    fresh process, and the one that dies again raises :class:`DecoderDiedError` naming what it
    held (``job.describe()``). Closing the returned iterator early stops the feeder and drops
    pending jobs.
    """
    if workers <= 0:
        for job in jobs:
            yield job()
        return
    depth = max(1, depth if depth is not None else 2 * workers)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="foldcnn-decode")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(jobs, pool, processes, lambda item: put_unless_stopped(q, item, stop)),
                              name="foldcnn-feeder", daemon=True)
    feeder.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            if kind == "call":
                yield value()
            elif kind == "job":
                yield value.result()
            else:
                yield _finish_remote(*value)
    finally:
        stop.set()
        _cancel_queued(q)  # so the feeder cannot block on a full queue
        feeder.join()
        pool.shutdown(wait=True, cancel_futures=True)


def _feed(jobs, pool: ThreadPoolExecutor, processes, put: Callable[[tuple], bool]) -> None:
    """The feeder thread of :func:`ordered_map`: submit each job and ``put`` its place in the order
    (``put`` returns False once the consumer has stopped)."""
    try:
        for job in jobs:
            if getattr(job, "inline", False):
                if not put(("call", job)):
                    return
                continue
            remote = getattr(job, "remote", None) if processes is not None else None
            if remote is not None:
                fn, args = remote
                fut = processes.submit(fn, *args)
                item = ("remote", (job, fut))
            else:
                fut = pool.submit(job)
                item = ("job", fut)
            if not put(item):
                fut.cancel()
                return
        put(("end", None))
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
        put(("error", e))
    finally:
        close = getattr(jobs, "close", None)
        if close is not None:
            close()  # e.g. release an open video file when the consumer stopped early


def _cancel_queued(q: queue.Queue) -> None:
    """Drop what :func:`_feed` queued and cancel its futures."""
    while True:
        try:
            kind, value = q.get_nowait()
        except queue.Empty:
            return
        if kind in ("job", "remote"):
            (value[1] if kind == "remote" else value).cancel()


def _finish_remote(job, fut):
    result = job.finish(resolve_remote(job, fut))
    result.in_process = True
    return result


def resolve_remote(job, fut):
    """The answer of ``job.remote`` from its process; when the pool broke (a worker died, which
    fails every job it held), the job is retried alone in a fresh process: the innocent ones
    succeed and the one that kills its decoder again fails the run with its inputs named
    (``job.describe()``)."""
    try:
        return fut.result()
    except BrokenProcessPool:
        alone = process_pool(1)
        try:
            fn, args = job.remote  # not None: it ran remotely
            return alone.submit(fn, *args).result()
        except BrokenProcessPool:
            what = job.describe() if hasattr(job, "describe") else "its inputs"
            raise DecoderDiedError(f"a decoding process died while reading {what} (twice, the second time "
                                   "alone); rerun with --workers 0 to decode in this process and find the file "
                                   "that crashes the decoder") from None
        finally:
            alone.shutdown(wait=True)


class LazyProcessPool:
    """A process pool started on the first ``submit`` (a one-image call never pays for it) and
    kept for later calls; after a worker died it is replaced on the next ``submit``."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self.available = os.name == "posix" and _can_fork()

    def submit(self, fn, *args):
        if self._pool is not None and getattr(self._pool, "_broken", False):
            self.shutdown()
        if self._pool is None:
            self._pool = process_pool(self.workers)
        try:
            return self._pool.submit(fn, *args)
        except BrokenProcessPool:  # a worker died since the check above: start afresh
            self.shutdown()
            self._pool = process_pool(self.workers)
            return self._pool.submit(fn, *args)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _can_fork() -> bool:
    import multiprocessing as mp

    return "forkserver" in mp.get_all_start_methods()
