import pytest

from foldcnn.timing import WallTimer, median_seconds


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_median_seconds_warms_up_once_then_takes_the_median():
    clock, costs, synced = Clock(), iter([50.0, 3.0, 1.0, 2.0, 9.0, 4.0]), []

    def fn():
        clock.t += next(costs)

    # the 50 s warm-up call is not timed; the median of 3, 1, 2, 9, 4 is 3
    assert median_seconds(fn, 5, WallTimer(clock), sync=lambda: synced.append(clock.t)) == 3.0
    assert synced == [50.0]  # sync runs once, after the warm-up


def test_median_seconds_needs_a_repeat():
    with pytest.raises(ValueError, match="repeats"):
        median_seconds(lambda: None, 0)
