import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foldcnn.data.base import ArrayDataset
from foldcnn.data.splits import random_split, split_dataset, temporal_split


@settings(max_examples=100, deadline=None)
@given(n=st.integers(10, 5000), gap=st.integers(0, 3))
def test_temporal_split_contiguous_ordered_disjoint(n, gap):
    s = temporal_split(n, (0.6, 0.2, 0.2), gap=gap)
    assert list(s) == ["train", "val", "test"]
    ranges = list(s.values())
    assert ranges[0].start == 0 and ranges[-1].stop == n
    for a, b in zip(ranges, ranges[1:]):
        assert b.start - a.stop == gap  # contiguous chunks with exactly `gap` unused frames
    assert all(len(r) >= 1 and r.step == 1 for r in ranges)
    assert sum(len(r) for r in ranges) == n - 2 * gap
    assert abs(len(s["train"]) - 0.6 * (n - 2 * gap)) <= 1


def test_temporal_split_errors_and_two_way():
    assert temporal_split(10, (0.5, 0.5)) == {"train": range(0, 5), "val": range(5, 10)}
    assert temporal_split(10, (0.5, 0.5), names=("train", "test"))["test"] == range(5, 10)
    with pytest.raises(ValueError, match="sum to 1"):
        temporal_split(100, (0.6, 0.2))
    with pytest.raises(ValueError, match="too few"):
        temporal_split(4, (0.6, 0.2, 0.2), gap=1)
    with pytest.raises(ValueError, match="gap"):
        temporal_split(100, gap=-1)


def test_random_split_partitions_and_is_seeded():
    s = random_split(103, (0.8, 0.2), seed=4)
    assert torch.equal(torch.cat(list(s.values())).sort().values, torch.arange(103))
    assert len(s["train"]) == 82 and len(s["val"]) == 21
    assert all(torch.equal(a, b) for a, b in zip(s.values(), random_split(103, (0.8, 0.2), seed=4).values()))


def test_split_dataset_applies_ranges_and_indices():
    ds = ArrayDataset(torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1), torch.arange(20) % 2, ["a", "b"],
                      {"source": "test"})
    parts = split_dataset(ds, temporal_split(20, gap=1))
    assert [p.images.view(-1).tolist() for p in parts.values()] == [list(range(0, 11)), list(range(12, 15)),
                                                                     list(range(16, 20))]
    assert parts["val"].meta == {"source": "test", "split": {"name": "val", "start": 12, "stop": 15}}
    assert ds.meta == {"source": "test"}
    rnd = split_dataset(ds, random_split(20, seed=0))
    assert sum(len(p) for p in rnd.values()) == 20
    with pytest.raises(ValueError, match="does not fit"):
        split_dataset(ds, {"x": range(0, 30)})
