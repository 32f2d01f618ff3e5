"""Video inputs of a scrape: files, standard input (``-``) and URLs, decoded once, in a thread.

Decoding is the predict pipeline's (:func:`foldcnn.data.readers.iter_container_batches`: PyAV
with FFmpeg's threads), at the frames' own size; only the regions' pixels are converted to RGB
(:class:`foldcnn.data.frames.RegionCropper`, checked to give the full frame's pixels). A :class:`FrameFeed` decodes in a background
thread, a bounded number of batches ahead of the models. A live input (``-`` or a URL) arrives
at its own pace: when the models fall behind and the queue is full, ``on_lag="drop"`` drops the
newest decoded frame (counted, never silent) and ``"block"`` stops reading until there is room
(the sender then waits, or its own buffer overflows). A file never lags: it is read as fast as
the models take it, whatever ``on_lag``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np

__all__ = ["FrameFeed", "is_live"]

FILE_BATCH = 16  # frames per decoded batch of a file
LIVE_QUEUE = 64  # frames a live input may wait for the models before on_lag applies
ON_LAG = ("drop", "block")


def is_live(video: str) -> bool:
    """Standard input or a URL: read as it arrives (at most 1 frame per batch, max-wait applies)."""
    return str(video) == "-" or "://" in str(video)


class FrameFeed:
    """``(frame numbers, [per box uint8 (k, 3, h, w)], arrival time)`` batches of one video,
    decoded in a thread; ``boxes_for(width, height)`` gives the boxes ``(x, y, w, h)`` to cut
    (foldcnn.data.frames.RegionCropper: only their pixels are converted to RGB).

    ``rate``: frames per second from the container (None where it does not say). Iterate with
    :meth:`get` (a timeout lets the caller flush waiting folds); an error of the decoder (a
    broken stream) is raised at its place, after every frame decoded before it.
    ``frames_read``: frames delivered so far; ``dropped``: frames dropped by ``on_lag="drop"``.
    """

    def __init__(self, video: str, boxes_for, stride: int = 1, keyframes: bool = False, on_lag: str = "drop") -> None:
        from foldcnn.data.frames import RegionCropper
        from foldcnn.data.readers import iter_container_batches, open_video_input

        if on_lag not in ON_LAG:
            raise ValueError(f"on_lag must be one of {ON_LAG}, got {on_lag!r}")
        self.video, self.live = str(video), is_live(video)
        container, name = open_video_input(video)
        self.name = str(name)  # in messages
        self.source = "-" if self.video == "-" else self.name  # in rows
        streams = container.streams.video
        rate = (streams[0].average_rate or streams[0].guessed_rate) if streams else None
        self.rate = float(rate) if rate else None
        batch = 1 if self.live else FILE_BATCH
        self.cropper = RegionCropper(boxes_for, batch)
        self._batches = iter_container_batches(container, self.name, None, stride, "nearest", keyframes=keyframes,
                                               batch=batch, converter=self.cropper)
        self._drop = self.live and on_lag == "drop"
        self._q: queue.Queue = queue.Queue(maxsize=LIVE_QUEUE if self.live else 4)
        self._stop = threading.Event()
        self.dropped = 0
        self.frames_read = 0
        self.seconds_decode = 0.0  # the decoding thread's time
        self._thread = threading.Thread(target=self._run, name="foldcnn-scrape-decode", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            t0 = time.perf_counter()
            for numbers, images, _ in self._batches:
                self.seconds_decode += time.perf_counter() - t0
                if numbers:
                    arrived = time.perf_counter()
                    if self._drop:
                        try:
                            self._q.put_nowait(("frames", (numbers, images, arrived)))
                        except queue.Full:
                            self.dropped += len(numbers)
                    elif not self._put(("frames", (numbers, images, arrived))):
                        return
                if self._stop.is_set():
                    return
                t0 = time.perf_counter()
            self._put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(("error", e))
        finally:
            self._batches.close()

    def get(self, timeout: float | None = None) -> tuple[list[int], list[np.ndarray], float] | None:
        """The next batch ``(numbers, frames, arrival time)``; None at the end of the video;
        raises queue.Empty after ``timeout`` seconds without one."""
        kind, value = self._q.get(timeout=timeout)
        if kind == "end":
            self._q.put((kind, value))  # stays at the end
            return None
        if kind == "error":
            self._q.put(("end", None))
            raise value
        self.frames_read += len(value[0])
        return value

    def __iter__(self) -> Iterator[tuple[list[int], list[np.ndarray], float]]:
        while (item := self.get()) is not None:
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
