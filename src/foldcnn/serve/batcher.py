"""Fold-aware dynamic batching: one queue of images shared by every request (asyncio + threads).

    batcher = FoldBatcher(predictor.predict_arrays, fold=4, max_batch=1024, max_wait_ms=5)
    await batcher.start()
    indices, probs = await batcher.submit(images)        # uint8 (n, C, H, W) -> (n,), (n, K)
    await batcher.close()                                 # drains the queue first

Batching rule. Requests append their images to one FIFO queue. A batch is sent when the queue
holds ``max_batch`` images or when its oldest image has waited ``max_wait_ms``, whichever comes
first; at most ``workers`` batches run at once, and while they run new images keep queueing, so
under load batches fill up by themselves. ``max_batch`` is a multiple of the fold f, so a full
batch is whole folds; a batch sent on the deadline may end in a partial fold, which the predict
function pads (the padding is counted as waste, never returned). Images of different requests
share folds and batches; a request larger than the room left is split across batches, and every
request keeps the offsets of its slices, so it gets exactly its own results in its own order.

Isolation. A folded model's answer for an image depends on the other images of its fold, so
sharing folds lets one client's images change another client's answers. ``isolation`` decides
who may share a fold: ``"none"`` (anyone: the fullest folds), ``"request"`` (only images of one
request: each request's images are folded in its own order, its last fold padded, so an image
gets the answer it gets when its request is alone on the server) or ``"key"`` (only images of
requests that came with the same API key and follow each other in the queue). Padding slots are
zero images whose results are discarded and counted as padding waste.

The model runs in a worker thread, never on the event loop. If the model raises for a batch,
only the requests with images in that batch fail (:class:`BatchFailed`); the next batch runs as
usual. A request whose caller was cancelled (the client went away) has its not yet batched
images dropped (counted); slices already in a batch are computed and their results discarded.

Admission by cost. The batcher measures the model's seconds per image slot (a moving average
over batches) and estimates how long the images already queued take to compute
(:meth:`FoldBatcher.wait_estimate_s`). ``submit`` refuses (:class:`QueueFull`, with a retry
time) only when that estimate passes ``max_queue_ms`` or the queue holds ``max_queue_images``;
a request still unbatched ``max_queue_ms`` after it was queued fails with :class:`QueueTimeout`
(its deadline passed) instead of being computed for a client that has likely given up.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from foldcnn.errors import UsageError
from foldcnn.fold import check_fold, padded_count, round_batch

__all__ = ["ISOLATION_MODES", "FoldBatcher", "BatcherStats", "BatchFailed", "BatcherClosed", "QueueFull",
           "QueueTimeout", "PredictFn"]

ISOLATION_MODES = ("none", "request", "key")
_RATE_WEIGHT = 0.2  # weight of the latest batch in the moving average of seconds per slot

_log = logging.getLogger("foldcnn.serve")
_NO_GROUP = object()  # before the first slice of a batch

# uint8 (N, C, H, W) -> (class indices int64 (N,), probabilities float32 (N, K)), input order.
PredictFn = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]


class BatchFailed(RuntimeError):
    """The model raised while computing a batch that held some of this request's images."""


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new images."""


class QueueFull(RuntimeError):
    """The images already queued cannot be computed within the deadline (or the queue holds
    ``max_queue_images``); ``retry_after_s`` is when to try again."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueTimeout(QueueFull):
    """The request waited in the queue past its deadline (``max_queue_ms``) without being batched."""


@dataclass
class BatcherStats:
    requests: int = 0
    batches: int = 0
    images: int = 0
    padded_images: int = 0
    fallback_images: int = 0
    failed_batches: int = 0
    dropped_images: int = 0
    batch_sizes: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1000))  # latest


@dataclass(eq=False)
class _Request:
    images: np.ndarray  # uint8 (n, C, H, W)
    future: asyncio.Future
    enqueued_s: float
    deadline_s: float
    group: object = None  # who may share this request's folds (isolation); None: anyone
    taken: int = 0  # images already put into a batch
    done: int = 0  # images whose results are in
    indices: np.ndarray | None = None
    probs: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.images.shape[0]


class FoldBatcher:
    """Dynamic batcher in front of a ``predict_fn`` (see the module docstring for the rule).

    predict_fn: uint8 (N, C, H, W) -> (int64 (N,), float32 (N, K)), any N >= 1, input order
    (``Predictor.predict_arrays``). ``partial``: what predict_fn does with a batch's partial
    last fold, "pad" (counted as padded images) or "fallback" (an unfolded model; counted as
    fallback images). ``metrics``: a :class:`~foldcnn.serve.metrics.ServeMetrics`
    or anything with ``batch(...)`` and ``drop(...)``.
    """

    def __init__(self, predict_fn: PredictFn, *, fold: int = 1, max_batch: int = 1024, max_wait_ms: float = 5.0,
                 workers: int = 1, max_queue_images: int | None = None, partial: str = "pad", metrics=None,
                 isolation: str = "none", max_queue_ms: float = 5000.0):
        self.fold = check_fold(fold)
        if isolation not in ISOLATION_MODES:
            raise UsageError(f"isolation must be one of {', '.join(ISOLATION_MODES)}, got {isolation!r}")
        self.isolation = isolation
        if partial not in ("pad", "fallback"):
            raise UsageError(f"partial must be 'pad' or 'fallback' (what predict_fn does with a partial last "
                             f"fold), got {partial!r}")
        self.partial = partial
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < self.fold:
            raise UsageError(f"max_batch must be an int >= fold={self.fold} (images per batch), got {max_batch!r}")
        if not max_wait_ms >= 0:
            raise UsageError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        if not max_queue_ms > 0:
            raise UsageError(f"max_queue_ms must be > 0, got {max_queue_ms!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise UsageError(f"workers must be an int >= 1 (batches computed at once), got {workers!r}")
        self.predict_fn = predict_fn
        self.max_batch = round_batch(max_batch, self.fold)  # full batches are whole folds
        self.max_wait_s = max_wait_ms / 1000.0
        self.workers = workers
        self.max_queue_images = max_queue_images or 16 * self.max_batch
        self.max_queue_s = max_queue_ms / 1000.0
        self.s_per_slot: float | None = None  # measured model seconds per image slot (moving average)
        self.metrics = metrics
        self.stats = BatcherStats()
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued = 0
        self._closing = False
        self._loop_task: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._running: set[asyncio.Task] = set()

    # ------------------------------------------------------------------------------ public
    @property
    def queued_images(self) -> int:
        """Images waiting for a batch (not counting batches being computed)."""
        return self._queued

    @property
    def closing(self) -> bool:
        return self._closing

    def wait_estimate_s(self) -> float:
        """Seconds the images queued now need before a new image's batch can start: the queue at
        the measured seconds per slot (0 until a batch has been timed) plus the batching wait."""
        if self.s_per_slot is None:
            return 0.0
        return self._queued * self.s_per_slot / self.workers + self.max_wait_s

    def check_admission(self, n: int, ahead_s: float = 0.0) -> None:
        """Raise :class:`QueueFull` if ``n`` more images cannot join the queue: it holds
        ``max_queue_images``, or the work admitted before them (the queue, plus ``ahead_s`` of
        the caller's own estimate, such as decoding) would not finish within ``max_queue_ms``."""
        if self._queued + n > self.max_queue_images:
            raise QueueFull(f"{self._queued} images are already queued (limit {self.max_queue_images}); "
                            f"retry in a moment", 1.0)
        wait_s = self.wait_estimate_s() + ahead_s
        if wait_s > self.max_queue_s:
            raise QueueFull(f"the server has about {wait_s * 1000:,.0f} ms of work queued, over its deadline of "
                            f"{self.max_queue_s * 1000:,.0f} ms; retry later", wait_s - self.max_queue_s)

    async def start(self) -> None:
        """Start the batching loop on the running event loop (``submit`` does it if needed)."""
        if self._loop_task is not None and not self._loop_task.done():
            return
        self._closing = False
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.workers)
        self._executor = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="foldcnn-infer")
        self._loop_task = asyncio.get_running_loop().create_task(self._batch_loop(), name="foldcnn-batcher")

    async def submit(self, images: np.ndarray, key: object = None) -> tuple[np.ndarray, np.ndarray]:
        """Queue uint8 images (n, C, H, W); wait for their (indices (n,), probabilities (n, K)).
        ``key`` names the client for ``isolation="key"`` (e.g. which API key it presented)."""
        if self._closing:
            raise BatcherClosed("the server is shutting down; retry on another instance or after restart")
        if not isinstance(images, np.ndarray) or images.ndim != 4:
            raise UsageError(f"submit takes a uint8 array (n, C, H, W), got {type(images).__name__} "
                             f"{tuple(getattr(images, 'shape', ()))}")
        if self._loop_task is None or self._loop_task.done():
            await self.start()
        n = images.shape[0]
        if n == 0:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        self.check_admission(n)
        now = time.monotonic()
        req = _Request(images, asyncio.get_running_loop().create_future(), now, now + self.max_queue_s)
        req.group = {"none": None, "request": id(req), "key": ("key", key)}[self.isolation]
        self._queue.append(req)
        self._queued += n
        self.stats.requests += 1
        self._wake.set()
        return await req.future  # cancelling the caller cancels this future: its images get dropped

    async def close(self, drain: bool = True) -> None:
        """Stop taking images; with ``drain`` compute everything queued first, else fail it."""
        self._closing = True
        if self._loop_task is None:
            return
        if not drain:
            while self._queue:
                req = self._queue.popleft()
                if not req.future.done():
                    req.future.set_exception(BatcherClosed("the server shut down before computing this request"))
            self._queued = 0
        self._wake.set()
        await self._loop_task
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> FoldBatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ----------------------------------------------------------------------------- batching
    async def _batch_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            # Wait for a full batch or the oldest image's deadline; closing flushes at once.
            deadline = self._queue[0].enqueued_s + self.max_wait_s
            while self._queued < self.max_batch and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            await self._slots.acquire()  # at most `workers` batches in flight; the queue keeps filling
            slices = self._take()
            if not slices:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run_batch(slices))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _take(self) -> list[tuple[_Request | None, int, int]]:
        """Up to max_batch image slots from the head of the queue, as (request, start, stop) slices;
        with isolation, a (None, 0, k) slice pads the previous group to whole folds."""
        slices, n, group = [], 0, _NO_GROUP
        isolated = self.isolation != "none"
        now = time.monotonic()
        while self._queue and n < self.max_batch:
            req = self._queue[0]
            if not req.future.done() and req.taken == 0 and now > req.deadline_s:
                req.future.set_exception(QueueTimeout(
                    f"the request waited {(now - req.enqueued_s) * 1000:,.0f} ms in the queue, past the server's "
                    f"deadline of {self.max_queue_s * 1000:,.0f} ms; retry later", 1.0))
            if req.future.done():  # the caller went away (cancelled), the request failed or timed out
                left = req.n - req.taken
                self._queue.popleft()
                self._queued -= left
                self.stats.dropped_images += left
                if self.metrics is not None:
                    self.metrics.drop(left)
                continue
            if isolated and req.group != group and n % self.fold:
                pad = self.fold - n % self.fold  # the previous group's last fold: no stranger joins it
                slices.append((None, 0, pad))
                n += pad
                if n >= self.max_batch:
                    break
            # With isolation n is a multiple of f here, and so is the room left: a request split
            # across batches is cut at a fold boundary and keeps its own grouping.
            k = min(req.n - req.taken, self.max_batch - n)
            slices.append((req, req.taken, req.taken + k))
            req.taken += k
            n += k
            self._queued -= k
            group = req.group
            if req.taken == req.n:
                self._queue.popleft()
        return slices

    def _timed_predict(self, parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
        t0 = time.perf_counter()
        images = np.concatenate(parts) if len(parts) > 1 else parts[0]  # here, not on the event loop
        indices, probs = self.predict_fn(images)
        return np.asarray(indices), np.asarray(probs), time.perf_counter() - t0

    async def _run_batch(self, slices: list[tuple[_Request | None, int, int]]) -> None:
        slots = sum(b - a for _, a, b in slices)
        n = sum(b - a for r, a, b in slices if r is not None)  # real images; the rest pads folds
        queue_wait_s = time.monotonic() - min(r.enqueued_s for r, _, _ in slices if r is not None)
        like = next(r.images for r, _, _ in slices if r is not None)
        parts = [r.images[a:b] if r is not None else np.zeros((b - a, *like.shape[1:]), like.dtype)
                 for r, a, b in slices]
        compute_s, error = 0.0, None
        try:
            loop = asyncio.get_running_loop()
            indices, probs, compute_s = await loop.run_in_executor(self._executor, self._timed_predict, parts)
            if indices.shape != (slots,) or probs.ndim != 2 or probs.shape[0] != slots:
                raise RuntimeError(f"the model returned {indices.shape} indices and {probs.shape} probabilities "
                                   f"for {slots} images")
        except Exception as e:  # any model failure fails this batch only; the server keeps serving
            error = e
        finally:
            self._slots.release()
        rest = padded_count(slots, self.fold) - slots
        padded, fallback = (rest, 0) if self.partial == "pad" else (0, slots % self.fold)
        padded += slots - n  # the isolation's padding slots
        if error is None and slots:
            rate = compute_s / slots
            self.s_per_slot = rate if self.s_per_slot is None else \
                (1 - _RATE_WEIGHT) * self.s_per_slot + _RATE_WEIGHT * rate
        self.stats.batches += 1
        self.stats.images += n
        self.stats.padded_images += padded
        self.stats.fallback_images += fallback
        self.stats.batch_sizes.append(n)
        if error is not None:
            self.stats.failed_batches += 1
            _log.error("the model failed on a batch of %d images", n, exc_info=error)
        if self.metrics is not None:
            self.metrics.batch(n, padded, queue_wait_s, compute_s, ok=error is None, fallback=fallback)
        offset = 0
        for req, a, b in slices:
            k = b - a
            if req is None or req.future.done():  # cancelled caller or a failure in another batch: discard
                offset += k
                continue
            if error is not None:
                req.future.set_exception(BatchFailed(f"the model failed on a batch of {n} images: "
                                                     f"{type(error).__name__}: {error}"))
                continue
            if req.indices is None:
                req.indices = np.empty(req.n, np.int64)
                req.probs = np.empty((req.n, probs.shape[1]), np.float32)
            req.indices[a:b] = indices[offset:offset + k]
            req.probs[a:b] = probs[offset:offset + k]
            offset += k
            req.done += k
            if req.done == req.n:
                req.future.set_result((req.indices, req.probs))
