"""Draw an iterator's items in a background thread, a bounded number ahead of the consumer.

Used where the producer's work releases the GIL: PyAV decoding a video while the caller
converts its frames (foldcnn.data.readers), several videos decoding at once while the engine
runs (foldcnn.infer.sources). Lowest layer: imports nothing of foldcnn.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = ["Ahead", "put_unless_stopped"]

T = TypeVar("T")
_POLL_S = 0.05


def put_unless_stopped(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item`` on the bounded queue ``q``, waiting while it is full; give up (False) once
    ``stop`` is set, so a producer never blocks on a consumer that has gone."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


class Ahead:
    """Draw ``factory()``'s items in a daemon thread, at most ``depth`` ahead of the consumer
    (several videos decode at once this way: PyAV releases the GIL while it decodes). An
    exception is raised to the consumer at its place; ``close()`` stops the thread early."""

    def __init__(self, factory: Callable[[], Iterator[T]], depth: int = 2, name: str = "foldcnn-ahead") -> None:
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(factory,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        return put_unless_stopped(self._q, item, self._stop)

    def _run(self, factory) -> None:
        it = None
        try:
            it = factory()
            for item in it:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(("error", e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        while True:
            kind, value = self._q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def close(self, wait: bool = False) -> None:
        """Stop drawing; with ``wait``, also until the thread has ended (e.g. before closing the
        file its iterator reads)."""
        self._stop.set()
        if wait:
            self._thread.join()
