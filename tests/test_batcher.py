"""FoldBatcher: routing of results through shared folds and batches, deadlines, failures, drain.

The predict function used here is an identity: the class of an image is its first pixel value,
so every result can be traced back to the image (and request) it came from.
"""

import asyncio
import time

import numpy as np
import pytest

from foldcnn.fold import padded_count
from foldcnn.serve.batcher import BatcherClosed, BatchFailed, FoldBatcher, QueueFull
from foldcnn.serve.metrics import ServeMetrics

K = 256


class Identity:
    """class index = pixel [0, 0, 0]; records every batch it sees."""

    def __init__(self, fold=1, delay_s=0.0, poison=None):
        self.fold, self.delay_s, self.poison = fold, delay_s, poison
        self.batches: list[int] = []

    def __call__(self, images):
        assert isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
        self.batches.append(images.shape[0])
        if self.delay_s:
            time.sleep(self.delay_s)
        idx = images[:, 0, 0, 0].astype(np.int64)
        if self.poison is not None and (idx == self.poison).any():
            raise RuntimeError("poisoned batch")
        probs = np.zeros((len(idx), K), np.float32)
        probs[np.arange(len(idx)), idx] = 1.0
        return idx, probs


def images_of(values):
    x = np.zeros((len(values), 3, 2, 2), np.uint8)
    x[:, 0, 0, 0] = values
    return x


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_folds_and_get_their_own_results():
    fn = Identity(fold=4)

    async def main():
        b = FoldBatcher(fn, fold=4, max_batch=8, max_wait_ms=20)
        sizes = [1, 3, 2, 7, 1, 5, 4, 2, 6, 1]
        values, start = [], 0
        for n in sizes:
            values.append([(start + i) % 250 for i in range(n)])
            start += n
        async with b:
            out = await asyncio.gather(*(b.submit(images_of(v)) for v in values))
        return b, values, out

    b, values, out = run(main())
    for v, (idx, probs) in zip(values, out):
        assert idx.tolist() == v  # own results, own order
        assert probs.shape == (len(v), K) and np.allclose(probs[np.arange(len(v)), idx], 1.0)
    total = sum(map(len, values))
    assert b.stats.batches < len(values)  # requests shared batches
    assert sum(fn.batches) == total == b.stats.images
    assert max(fn.batches) <= 8
    assert all(n % 4 == 0 for n in fn.batches[:-1])  # only a deadline flush may end in a partial fold
    assert b.stats.padded_images == sum(padded_count(n, 4) - n for n in fn.batches)


def test_request_larger_than_max_batch_is_split_in_order():
    fn = Identity(fold=2)

    async def main():
        async with FoldBatcher(fn, fold=2, max_batch=4, max_wait_ms=1) as b:
            return await b.submit(images_of(list(range(11))))

    idx, _ = run(main())
    assert idx.tolist() == list(range(11))
    assert fn.batches == [4, 4, 3]


def test_lone_request_is_flushed_by_max_wait():
    fn = Identity(fold=4)

    async def main():
        async with FoldBatcher(fn, fold=4, max_batch=1024, max_wait_ms=30) as b:
            t0 = time.perf_counter()
            idx, _ = await b.submit(images_of([9]))
            return b, idx, time.perf_counter() - t0

    b, idx, elapsed_s = run(main())
    assert idx.tolist() == [9]
    assert 0.025 <= elapsed_s < 2.0  # waited for company, then went alone
    assert fn.batches == [1] and b.stats.padded_images == 3


def test_full_batch_does_not_wait_for_the_deadline():
    fn = Identity(fold=2)

    async def main():
        async with FoldBatcher(fn, fold=2, max_batch=6, max_wait_ms=60_000) as b:
            return await asyncio.wait_for(b.submit(images_of(list(range(6)))), 5)

    idx, _ = run(main())
    assert idx.tolist() == list(range(6))


def test_max_batch_rounds_down_to_whole_folds_and_validates():
    assert FoldBatcher(Identity(), fold=4, max_batch=10).max_batch == 8
    with pytest.raises(ValueError, match="max_batch"):
        FoldBatcher(Identity(), fold=4, max_batch=3)
    with pytest.raises(ValueError, match="workers"):
        FoldBatcher(Identity(), workers=0)


def test_model_exception_fails_only_its_batch_and_the_next_succeeds():
    pytest.importorskip("prometheus_client")
    fn = Identity(poison=7)
    metrics = ServeMetrics(4)

    async def main():
        async with FoldBatcher(fn, max_batch=4, max_wait_ms=50, metrics=metrics) as b:
            bad = b.submit(images_of([7, 1, 2, 3]))  # fills batch 1
            good = b.submit(images_of([4, 5, 6, 8]))  # batch 2
            res = await asyncio.gather(bad, good, return_exceptions=True)
            after = await b.submit(images_of([10]))
            return b, res, after

    b, (bad, good), after = run(main())
    assert isinstance(bad, BatchFailed) and "poisoned batch" in str(bad)
    assert good[0].tolist() == [4, 5, 6, 8]
    assert after[0].tolist() == [10]
    assert b.stats.failed_batches == 1 and metrics.value("foldcnn_batch_errors_total") == 1


def test_cancelled_request_is_dropped_and_others_are_served():
    fn = Identity(delay_s=0.15)

    async def main():
        async with FoldBatcher(fn, max_batch=4, max_wait_ms=1) as b:
            first = asyncio.ensure_future(b.submit(images_of([1, 2, 3, 4])))
            await asyncio.sleep(0.05)  # batch 1 is now computing; the next ones queue
            gone = asyncio.ensure_future(b.submit(images_of([5, 6])))
            last = asyncio.ensure_future(b.submit(images_of([7])))
            await asyncio.sleep(0.01)
            gone.cancel()
            return b, await first, await last, gone

    b, first, last, gone = run(main())
    assert gone.cancelled()
    assert first[0].tolist() == [1, 2, 3, 4] and last[0].tolist() == [7]
    assert b.stats.dropped_images == 2
    assert fn.batches == [4, 1]


def test_close_drains_the_queue_then_refuses_new_images():
    fn = Identity()

    async def main():
        b = FoldBatcher(fn, max_batch=1024, max_wait_ms=60_000)
        await b.start()
        jobs = [asyncio.ensure_future(b.submit(images_of([i]))) for i in range(5)]
        await asyncio.sleep(0.01)
        assert b.queued_images == 5
        await asyncio.wait_for(b.close(), 5)  # does not wait out the 60 s deadline
        with pytest.raises(BatcherClosed):
            await b.submit(images_of([1]))
        return [j.result()[0].tolist() for j in jobs]

    assert run(main()) == [[i] for i in range(5)]


def test_queue_limit_refuses_with_queue_full():
    async def main():
        async with FoldBatcher(Identity(), max_batch=4, max_wait_ms=60_000, max_queue_images=4) as b:
            first = asyncio.ensure_future(b.submit(images_of([1, 2, 3])))
            await asyncio.sleep(0)
            with pytest.raises(QueueFull):
                await b.submit(images_of([4, 5]))
            last = await b.submit(images_of([6]))  # fills the batch: both complete
            return (await first)[0].tolist(), last[0].tolist()

    assert run(main()) == ([1, 2, 3], [6])


def test_workers_compute_batches_concurrently():
    fn = Identity(delay_s=0.2)

    async def main():
        async with FoldBatcher(fn, max_batch=2, max_wait_ms=1, workers=2) as b:
            t0 = time.perf_counter()
            await asyncio.gather(b.submit(images_of([1, 2])), b.submit(images_of([3, 4])))
            return time.perf_counter() - t0

    assert run(main()) < 0.38  # two 0.2 s batches overlapped
