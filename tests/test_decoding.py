"""foldcnn.serve.decoding: pixel budgets and the fair decoding pool (sleeping stand-ins, no images)."""

import asyncio
import threading
import time

import pytest

from foldcnn.serve.decoding import DecodePool, PixelBudget

BIG, SMALL = 1_000_000, 1_000  # budget 1,000,000: one big image at a time; small ones skip it


def test_budget_grants_in_order_and_never_overdraws():
    async def main():
        b = PixelBudget(10)
        order = []

        async def take(name, n, hold_s):
            got = await b.acquire(n)
            order.append(name)
            assert b.used <= b.total
            await asyncio.sleep(hold_s)
            b.release(got)

        await asyncio.gather(take("a", 6, 0.05), take("b", 6, 0.01), take("c", 3, 0.01), take("huge", 99, 0.01))
        return order, b.used

    order, used = asyncio.run(main())
    assert order == ["a", "b", "c", "huge"] and used == 0  # c waits behind b: first come, first served


def test_cancelled_waiter_gives_nothing_away():
    async def main():
        b = PixelBudget(10)
        first = await b.acquire(10)
        waiter = asyncio.ensure_future(b.acquire(5))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        b.release(first)
        return b.used, await b.acquire(10)

    assert asyncio.run(main()) == (0, 10)


class Sleeper:
    """Decode stand-in: sleeps (GIL released, like Pillow) and records how many big images overlap."""

    def __init__(self):
        self.lock = threading.Lock()
        self.big_now = self.big_max = 0

    def __call__(self, pixels, seconds, tag):
        big = pixels > SMALL
        with self.lock:
            self.big_now += big
            self.big_max = max(self.big_max, self.big_now)
        time.sleep(seconds)
        with self.lock:
            self.big_now -= big
        return tag


def test_heavy_requests_take_turns_and_a_small_one_stays_fast():
    sleeper = Sleeper()

    async def main():
        pool = DecodePool(threads=2, server_pixels=BIG, request_pixels=BIG)

        async def heavy(k):
            return await pool.map(lambda i: sleeper(BIG, 0.1, (k, i)), [BIG] * 5)

        attack = [asyncio.ensure_future(heavy(k)) for k in range(4)]  # 20 x 0.1 s of heavy decoding
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        small = await pool.map(lambda i: sleeper(SMALL, 0.001, "small"), [SMALL])
        small_s = time.perf_counter() - t0
        results = await asyncio.gather(*attack)
        pool.close()
        return small, small_s, results

    small, small_s, results = asyncio.run(main())
    assert small == ["small"] and small_s < 0.09  # never behind a 0.1 s heavy decode, let alone 20 of them
    assert results == [[(k, i) for i in range(5)] for k in range(4)]  # every request in its own order
    assert sleeper.big_max == 1  # the server-wide budget holds one big image


def test_heavy_backlog_is_estimated_from_the_measured_rate_and_drains_to_zero():
    sleeper = Sleeper()

    async def main():
        pool = DecodePool(threads=2, server_pixels=BIG, request_pixels=BIG)
        prior = pool.wait_estimate_s()
        first = await pool.map(lambda i: sleeper(BIG, 0.05, i), [BIG])  # times one heavy image: ~0.05 s
        rate = pool.s_per_pixel
        job = asyncio.ensure_future(pool.map(lambda i: sleeper(BIG, 0.05, i), [BIG] * 6))
        await asyncio.sleep(0.01)
        during = pool.wait_estimate_s()  # six heavy images admitted, at most one done
        small = asyncio.ensure_future(pool.map(lambda i: i, [SMALL] * 3))  # small images add nothing
        await small
        await job
        after = pool.wait_estimate_s()
        pool.close()
        return prior, first, rate, during, after

    prior, first, rate, during, after = asyncio.run(main())
    assert prior == 0 and first == [0] and 0.04 / BIG <= rate <= 1.0 / BIG
    assert 5 * BIG * rate <= during <= 6 * BIG * rate
    assert after == 0


def test_first_error_fails_the_request_and_returns_the_budget():
    def decode(i):
        if i == 1:
            raise ValueError("bad image 1")
        time.sleep(0.02)
        return i

    async def main():
        pool = DecodePool(threads=2, server_pixels=BIG, request_pixels=BIG)
        with pytest.raises(ValueError, match="bad image 1"):
            await pool.map(decode, [BIG] * 6)
        await asyncio.sleep(0.1)  # images already running finish and give their pixels back
        used = pool.server.used
        ok = await pool.map(lambda i: i, [BIG, SMALL])
        pool.close()
        return used, ok

    assert asyncio.run(main()) == (0, [0, 1])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="threads"):
        DecodePool(threads=0)
    with pytest.raises(ValueError, match="budget"):
        PixelBudget(0)
