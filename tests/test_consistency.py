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
