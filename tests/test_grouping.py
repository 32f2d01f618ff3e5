import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foldcnn import fold_images
from foldcnn.data.base import ArrayDataset
from foldcnn.data.grouping import FoldBatcher, fold_groups, gather_fold_batch


def _data(n, c=2, h=3, w=4):
    images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)
    labels = torch.randint(0, 5, (n,))
    return images, labels


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 120), fold=st.integers(1, 5), batch_size=st.integers(1, 40),
       seed=st.integers(0, 2**32), epoch=st.integers(0, 1000), shuffle=st.booleans())
def test_every_image_exactly_once_per_epoch(n, fold, batch_size, seed, epoch, shuffle):
    images, labels = _data(n)
    b = FoldBatcher((images, labels), fold, batch_size, seed=seed, shuffle=shuffle, return_index=True)
    b.set_epoch(epoch)
    assert b.batch_size == max(fold, batch_size // fold * fold)
    seen, padded, batches = [], 0, 0
    for x, y, mask, index in b:
        batches += 1
        assert len(index) <= b.batch_size and len(index) % fold == 0
        assert x.shape == (len(index) // fold, fold * 2, 3, 4) and x.dtype == torch.float32
        assert torch.equal(mask, index >= 0)
        per_image = x.reshape(len(index), 2, 3, 4)  # the inverse of fold_images
        real = index[mask]
        assert torch.equal(per_image[mask], images[real].float() / 255)
        assert torch.equal(y[mask], labels[real])
        assert not per_image[~mask].any() and not y[~mask].any()
        padded += int((~mask).sum())
        seen.append(real)
    assert batches == len(b)
    seen = torch.cat(seen) if seen else torch.empty(0, dtype=torch.int64)
    assert torch.equal(seen.sort().values, torch.arange(n))
    assert padded == b.padding == -n % fold


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 200), fold=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_fold_groups_partition_with_padding_last(n, fold, seed):
    g = fold_groups(n, fold, seed=seed, epoch=3)
    assert g.shape == (-(-n // fold), fold) and g.dtype == torch.int64
    flat = g.view(-1)
    pad = -n % fold
    assert (flat[len(flat) - pad:] == -1).all() and (flat[: len(flat) - pad] >= 0).all()
    assert torch.equal(flat[flat >= 0].sort().values, torch.arange(n))


def test_epochs_regroup_and_evaluation_is_fixed():
    assert not torch.equal(fold_groups(100, 4, seed=0, epoch=0), fold_groups(100, 4, seed=0, epoch=1))
    assert torch.equal(fold_groups(100, 4, seed=0, epoch=5), fold_groups(100, 4, seed=0, epoch=5))
    assert not torch.equal(fold_groups(100, 4, seed=0), fold_groups(100, 4, seed=1))
    assert not torch.equal(fold_groups(100, 4, seed=0), fold_groups(100, 4, seed=0, epoch=0))
    ds = ArrayDataset(*_data(30), classes=list("abcde"))
    train = FoldBatcher(ds, 3, 9, seed=7)
    evals = FoldBatcher(ds, 3, 9, seed=7, shuffle=False)
    first_train, first_eval = train.groups(), evals.groups()
    train.set_epoch(1)
    evals.set_epoch(1)
    assert not torch.equal(train.groups(), first_train)
    assert torch.equal(evals.groups(), first_eval)
    # groups mix images: a seeded grouping is not storage order
    assert not torch.equal(first_eval, torch.arange(30).view(10, 3))


def test_storage_order_matches_fold_images():
    images, labels = _data(8)
    b = FoldBatcher((images, labels), 4, 8, seed=None, shuffle=False)
    (x, y, mask), = list(b)
    assert torch.equal(x, fold_images(images.float() / 255, 4))
    assert torch.equal(y, labels) and mask.all()
    assert torch.equal(fold_groups(6, 4), torch.tensor([[0, 1, 2, 3], [4, 5, -1, -1]]))


def test_batch_size_rounding_and_padding_waste():
    images, labels = _data(10)
    assert FoldBatcher((images, labels), 4, 10).batch_size == 8
    assert FoldBatcher((images, labels), 4, 2).batch_size == 4
    b = FoldBatcher((images, labels), 4, 8)
    assert b.padding == 2 and len(b) == 2
    sizes = [len(y) for _, y, _ in b]
    assert sizes == [8, 4]


def test_float_images_are_not_rescaled():
    images = torch.rand(4, 1, 2, 2)
    x, _, _ = gather_fold_batch(images, torch.zeros(4, dtype=torch.int64), torch.tensor([2, 0, 1, -1]), 2)
    assert torch.equal(x[0, 0], images[2, 0]) and not x[1, 1].any()


def test_bad_arguments():
    images, labels = _data(4)
    with pytest.raises(TypeError, match="ArrayDataset"):
        FoldBatcher(images, 2, 4)
    with pytest.raises(ValueError, match="labels"):
        FoldBatcher((images, labels[:3]), 2, 4)
    with pytest.raises(ValueError, match="seed"):
        FoldBatcher((images, labels), 2, 4, seed=None)
    with pytest.raises(ValueError, match="fold"):
        fold_groups(4, 0)
    with pytest.raises(ValueError, match="epoch"):
        fold_groups(4, 2, epoch=1)
