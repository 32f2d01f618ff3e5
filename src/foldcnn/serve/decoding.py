"""Decoding that no client can monopolize: a thread pool of its own, metered in pixels.

    pool = DecodePool(threads=2, server_pixels=16_000_000, request_pixels=16_000_000)
    images = await pool.map(decode_one, blobs, pixels)   # results in input order
    pool.close()

Why pixels. Decoding time and memory grow with an image's decoded size, not its encoded one: a
3999x4000 PNG of zeros is 46 KB and takes ~0.2 s and 48 MB to decode, a 22x52 crop a fraction of
a millisecond. On a shared FIFO pool, eight requests of 25 such images queued 200 long decodes in
front of every one-image request (docs/serving.md, the load test: seconds instead of milliseconds). Here:

* every request decodes through a window of its own: at most ``threads`` images and
  ``request_pixels`` pixels in flight, so one request never fills the pool's queue;
* images larger than ``small_pixels`` also need the server-wide ``server_pixels`` budget, granted
  first come, first served: with the default budget of one largest image, heavy images decode one
  at a time and a heavy request waits for its own turn;
* smaller images (at most 1/64 of the budget: 250,000 pixels by default) skip the server-wide budget:
  they decode in about a millisecond, and a pool thread is always left for them because heavy
  images hold at most the budget's worth.

* a request whose images hold at most ``INLINE_PIXELS`` pixels in all (a 256 x 256 image, or
  137 images of 19 x 25) decodes on the calling event loop: well under a millisecond, and a
  thread hand-off (futures, locks, a wake-up) costs more than decoding such an image.

The pool measures its seconds per heavy pixel and knows the heavy pixels admitted and not yet
decoded, so :meth:`DecodePool.wait_estimate_s` says how long a new heavy image would wait
(the server refuses a request whose admitted work cannot finish within its deadline).

A budget is returned when the decode thread finishes, even when the request was cancelled
meanwhile (its client went away): a running decode still holds its pixels and its memory.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from foldcnn.errors import UsageError

__all__ = ["DecodePool", "PixelBudget"]

T = TypeVar("T")
SMALL_FRACTION = 64  # images of at most budget / 64 pixels skip the server-wide budget
INLINE_PIXELS = 65_536  # a request of at most this many pixels in all decodes on the event loop
_RATE_WEIGHT = 0.2  # weight of the latest heavy image in the moving average of seconds per pixel
# Before the first heavy image is timed: ~0.16 s for 16 MP, about what a PNG of that size takes here.
PRIOR_S_PER_PIXEL = 1e-8


class PixelBudget:
    """An async semaphore counted in pixels, granted in arrival order (event-loop only, no locks).

    A charge larger than the whole budget is granted alone (when nothing else holds any)."""

    def __init__(self, total: int):
        if total < 1:
            raise UsageError(f"a pixel budget must be >= 1, got {total}")
        self.total, self.used = total, 0
        self._waiters: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    def _charge(self, pixels: int) -> int:
        return min(max(int(pixels), 1), self.total)

    async def acquire(self, pixels: int) -> int:
        """Wait until ``pixels`` fit; returns the charge to pass to :meth:`release`."""
        n = self._charge(pixels)
        if not self._waiters and self.used + n <= self.total:
            self.used += n
            return n
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted just as it was cancelled: give it back
                self.release(n)
            else:
                self._waiters.remove((n, fut))
                self._grant()  # a cancelled head may have been blocking smaller waiters behind it
            raise
        return n

    def release(self, n: int) -> None:
        self.used -= n
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.total:
            n, fut = self._waiters.popleft()
            if not fut.done():
                self.used += n
                fut.set_result(None)


class DecodePool:
    """A bounded thread pool for decoding, fair between requests (see the module docstring)."""

    def __init__(self, threads: int = 2, server_pixels: int = 16_000_000, request_pixels: int = 16_000_000):
        for name, v in (("threads", threads), ("server_pixels", server_pixels), ("request_pixels", request_pixels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"DecodePool {name} must be a positive int, got {v!r}")
        self.threads, self.request_pixels = threads, request_pixels
        self.small_pixels = server_pixels // SMALL_FRACTION
        self.server = PixelBudget(server_pixels)
        self.heavy_pixels = 0  # pixels of heavy images admitted (map called) and not yet decoded
        self.s_per_pixel = PRIOR_S_PER_PIXEL  # decode seconds per heavy pixel (moving average once measured)
        self._timed_once = False
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="foldcnn-decode")

    async def call(self, fn: Callable[..., T], *args) -> T:
        """Run ``fn(*args)`` on a pool thread without any budget (cheap work such as parsing JSON)."""
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    def is_heavy(self, pixels: int) -> bool:
        return pixels > self.small_pixels

    def wait_estimate_s(self) -> float:
        """Seconds the heavy images admitted now need before a new heavy image can start (at
        PRIOR_S_PER_PIXEL until one has been timed); small images do not wait for them."""
        return self.heavy_pixels * self.s_per_pixel

    def _timed(self, fn: Callable[[int], T], i: int, pixels: int) -> T:
        t0 = time.perf_counter()
        out = fn(i)
        rate = (time.perf_counter() - t0) / max(pixels, 1)
        self.s_per_pixel = (1 - _RATE_WEIGHT) * self.s_per_pixel + _RATE_WEIGHT * rate if self._timed_once else rate
        self._timed_once = True
        return out

    async def map(self, fn: Callable[[int], T], pixels: Sequence[int]) -> list[T]:
        """``[fn(0), fn(1), ...]`` decoded on the pool, image i charged ``pixels[i]``; in input order.

        The first exception cancels the images not started yet and is raised."""
        if sum(pixels) <= INLINE_PIXELS:
            return [fn(i) for i in range(len(pixels))]
        loop = asyncio.get_running_loop()
        window = asyncio.Semaphore(self.threads)
        mine = PixelBudget(self.request_pixels)

        backlog = [p if self.is_heavy(p) else 0 for p in pixels]  # heavy pixels still to decode, per image
        self.heavy_pixels += sum(backlog)

        def decoded(i: int) -> None:  # once per image: decoded, failed, or never started
            self.heavy_pixels -= backlog[i]
            backlog[i] = 0

        async def one(i: int) -> T:
            p = pixels[i]
            await window.acquire()
            held: list[tuple[PixelBudget, int]] = []

            def release() -> None:
                for budget, n in held:
                    budget.release(n)
                window.release()
                decoded(i)

            try:
                held.append((mine, await mine.acquire(p)))
                if p > self.small_pixels:
                    held.append((self.server, await self.server.acquire(p)))
            except BaseException:
                release()
                raise

            def done(_) -> None:  # in the decode thread: hand the release to the loop
                try:
                    loop.call_soon_threadsafe(release)
                except RuntimeError:  # the loop has closed (server shut down): nothing left to release to
                    pass

            started[i] = True
            job = self._pool.submit(self._timed, fn, i, p) if self.is_heavy(p) else self._pool.submit(fn, i)
            job.add_done_callback(done)  # when the thread is done, not when the request gives up
            return await asyncio.wrap_future(job)

        started = [False] * len(pixels)
        tasks = [asyncio.ensure_future(one(i)) for i in range(len(pixels))]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for i, t in enumerate(tasks):
                if t.cancel() and not started[i]:  # never reached the pool: nothing left to decode
                    decoded(i)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
