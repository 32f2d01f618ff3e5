import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foldcnn import create_model
from foldcnn.data.base import ArrayDataset
from foldcnn.train.config import TrainConfig
from foldcnn.train.curriculum import curriculum_schedule, epoch_groups, stage_sizes
from foldcnn.train.loop import train_model


@settings(max_examples=200, deadline=None)
@given(k=st.integers(1, 130), fold=st.integers(1, 6), epochs=st.integers(1, 60),
       end=st.floats(0.01, 1.0, allow_nan=False))
def test_schedule_invariants(k, fold, epochs, end):
    s = curriculum_schedule(k, fold, epochs, end)
    assert len(s) == epochs and s[-1] == k
    assert all(1 <= a <= b <= k for a, b in zip(s, s[1:]))
    start, step = min(k, max(k // 10, fold)), max(k // 10, 1)
    all_in = min(epochs - 1, round(end * epochs))
    if all_in > 0 and start < k:
        assert s[0] == start  # the first stage always lasts at least one epoch
    assert all(a == k for a in s[max(all_in, 0):])  # every class in from the end point on
    for a, b in zip(s, s[1:]):  # classes join max(K // 10, 1) at a time (or several at once on short runs)
        assert (b - a) % step == 0 or b == k


def test_paper_example_and_short_runs():
    # lol-gold-int: 111 classes at f=4 start with 11 and add 11 at a time (docs/design.md, "Training recipe").
    s = curriculum_schedule(111, 4, 20, 0.6)
    assert s[:2] == [11, 11] and sorted(set(s)) == [11, 22, 33, 44, 55, 66, 77, 88, 99, 110, 111]
    assert s.index(111) == 12  # round(0.6 * 20)
    assert curriculum_schedule(11, 4, 1) == [11]  # one epoch: nothing to stage
    assert curriculum_schedule(2, 4, 10) == [2] * 10  # fold >= K: all classes from the start
    assert curriculum_schedule(11, 4, 30, 1.0)[-1] == 11 and curriculum_schedule(11, 4, 30, 1.0)[-2] < 11
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        curriculum_schedule(11, 4, 30, 0.0)


def test_epoch_groups_hold_only_active_images_once():
    labels = torch.arange(50) % 5
    groups = epoch_groups(labels, 3, 5, 4, seed=0, epoch=2)
    real = groups[groups >= 0]
    assert sorted(real.tolist()) == (labels < 3).nonzero().view(-1).tolist()
    assert (groups < 0).sum() == -len(real) % 4
    full = epoch_groups(labels, 5, 5, 4, seed=0, epoch=2)
    assert sorted(full[full >= 0].tolist()) == list(range(50))


def test_stage_without_images_is_an_error():
    with pytest.raises(ValueError, match="no training images"):
        stage_sizes(torch.tensor([3, 3, 4]), 5, [2, 5])


def _bright_channel_data(n: int, seed: int, k: int = 6) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % k
    images = torch.randint(0, 40, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):  # colour c % 3, whole image (c < 3) or top half only
        images[i, c % 3, : 12 if c < 3 else 6] += 180
    return ArrayDataset(images, labels, [f"c{i}" for i in range(k)])


def test_curriculum_training_stages_and_best_epoch(tmp_path):
    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=2, num_classes=6, input_size=(12, 12))
    cfg = TrainConfig(epochs=6, batch_size=16, precision="fp32", curriculum=True, curriculum_end=0.5)
    steps = []
    result = train_model(model, _bright_channel_data(120, 0), _bright_channel_data(36, 1), cfg, out_dir=tmp_path,
                         progress=False, on_step=steps.append)
    schedule = curriculum_schedule(6, 2, 6, 0.5)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["active_classes"] for r in rows] == schedule == result.features["curriculum"]
    # Fewer images in early stages -> fewer steps (8 per stage of 2 classes: 40 images, 20 groups, 8/step).
    per_epoch = [max(s["step"] for s in steps if s["epoch"] == e + 1) for e in range(6)]
    assert per_epoch == [-(-(120 * a // 6) // 2 // 8) for a in schedule]
    first_full = schedule.index(6) + 1
    assert result.best_epoch >= first_full  # chosen only with every class in
    assert result.best_val_top1 == max(r["val_top1"] for r in rows[first_full - 1:])
    assert result.best_val_top1 > 0.4  # chance is 1/6
