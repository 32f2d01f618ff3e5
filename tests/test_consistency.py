"""foldcnn.train.consistency: two groupings of the same images, and the divergence between them."""

from __future__ import annotations

import pytest
import torch

from foldcnn.errors import UsageError
from foldcnn.train.consistency import align_to, consistency_loss_sum, regroup_index


def test_regroup_keeps_every_image_once_and_padding_in_place():
    index = torch.tensor([4, 9, 2, 7, 5, 1, 8, -1])  # two folds of 4, the last slot padded
    g = torch.Generator().manual_seed(0)
    out = regroup_index(index, 4, g)
    assert sorted(out[out >= 0].tolist()) == sorted(index[index >= 0].tolist())
    assert out[-1] == -1 and not torch.equal(out, index)
    assert torch.equal(regroup_index(torch.tensor([3, 1]), 2, g), torch.tensor([3, 1]))  # one fold: nothing to do
    with pytest.raises(UsageError):
        regroup_index(torch.tensor([1, 2, 3]), 2)


def test_align_maps_one_order_onto_the_other():
    a = torch.tensor([5, 3, 9, 1])
    b = torch.tensor([9, 1, 5, 3])
    assert torch.equal(b[align_to(a, b)], a)


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_divergence_is_zero_for_equal_outputs_positive_and_symmetric_otherwise(kind):
    a = torch.randn(6, 5)
    b = a + torch.randn(6, 5)
    assert consistency_loss_sum(a, a.clone(), kind) == pytest.approx(0.0, abs=1e-6)
    assert consistency_loss_sum(a, b, kind) > 0
    assert consistency_loss_sum(a, b, kind) == pytest.approx(consistency_loss_sum(b, a, kind).item(), rel=1e-5)
    with pytest.raises(UsageError):
        consistency_loss_sum(a, b, "l1")


def test_sharp_kind_pulls_each_answer_to_the_others_confident_one_only():
    a = torch.randn(6, 5, requires_grad=True)
    b = torch.randn(6, 5, requires_grad=True)
    loss = consistency_loss_sum(a, b, "sharp")
    assert loss.item() > 0 and loss.item() == pytest.approx(consistency_loss_sum(b, a, "sharp").item(), rel=1e-5)
    loss.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0  # each side learns from the other's target
    # two equally unsure answers are not rewarded (the symmetric KL is zero for them)
    flat = torch.zeros(6, 5)
    assert consistency_loss_sum(flat, flat.clone(), "kl") == 0
    assert consistency_loss_sum(flat, flat.clone(), "sharp") == pytest.approx(0.0, abs=1e-6)  # uniform stays uniform
    unsure = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]]).repeat(6, 1)
    assert consistency_loss_sum(unsure, unsure.clone(), "sharp") > 0  # the same mild answer: pushed to sharpen
    confident = unsure * 20
    assert consistency_loss_sum(confident, confident.clone(), "sharp") == pytest.approx(0.0, abs=1e-4)


def _train(cfg_kwargs, tmp_path=None, seed=0):
    from tiny_data import easy_dataset

    from foldcnn.models import create_model
    from foldcnn.train.config import TrainConfig
    from foldcnn.train.loop import train_model

    torch.manual_seed(seed)
    model = create_model("sot-coin-count", fold=2, num_classes=3, input_size=(16, 16))
    cfg = TrainConfig(epochs=2, batch_size=12, threads=1, precision="fp32", **cfg_kwargs)
    result = train_model(model, easy_dataset(36, 0), easy_dataset(12, 1), cfg, progress=False)
    return model, result


def test_training_with_consistency_is_deterministic_and_uses_two_groupings(monkeypatch):
    import foldcnn.train.loop as loop

    calls = []
    real = loop.consistency_loss_sum

    def spy(a, b, kind):
        calls.append((tuple(a.shape), tuple(b.shape), kind))
        return real(a, b, kind)

    monkeypatch.setattr(loop, "consistency_loss_sum", spy)
    m1, r1 = _train({"consistency": 1.0})
    assert calls and all(sa == sb and sa[1] == 3 and kind == "kl" for sa, sb, kind in calls)
    m2, _ = _train({"consistency": 1.0})
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    m0, _ = _train({})  # off: another run
    assert not all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m0.state_dict().values()))
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in r1.history)


def test_consistency_options_are_validated():
    from foldcnn.train.config import TrainConfig

    with pytest.raises(UsageError, match="consistency"):
        TrainConfig(consistency=-1)
    with pytest.raises(UsageError, match="consistency_kind"):
        TrainConfig(consistency_kind="l1")
