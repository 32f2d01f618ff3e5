import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foldcnn import fold_images, pad_to_fold, padded_count, unfold_logits

shapes = st.tuples(
    st.integers(1, 4),  # fold
    st.integers(0, 6),  # groups
    st.integers(1, 4),  # C
    st.integers(1, 5),  # H
    st.integers(1, 5),  # W
)


@settings(max_examples=60, deadline=None)
@given(shapes)
def test_fold_layout_matches_contract(s):
    f, g, c, h, w = s
    x = torch.randn(g * f, c, h, w)
    y = fold_images(x, f)
    assert y.shape == (g, f * c, h, w)
    for i in range(g * f):
        # image i -> folded input i // f, channel slots [C*(i % f), C*(i % f) + C)
        torch.testing.assert_close(y[i // f, c * (i % f): c * (i % f) + c], x[i], rtol=0, atol=0)


@settings(max_examples=60, deadline=None)
@given(shapes)
def test_fold_is_a_view_of_contiguous_input(s):
    f, g, c, h, w = s
    x = torch.randn(g * f, c, h, w)
    y = fold_images(x, f)
    assert y.data_ptr() == x.data_ptr()
    if x.numel():
        x[0, 0, 0, 0] = 123.0
        assert y[0, 0, 0, 0] == 123.0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(0, 6), st.integers(1, 7))
def test_unfold_logits_layout(f, g, k):
    y = torch.randn(g, f * k)
    out = unfold_logits(y, f)
    assert out.shape == (g * f, k)
    for gi in range(g):
        for j in range(f):
            # logits [j*K, (j+1)*K) of folded row g belong to image g*f + j
            assert torch.equal(out[gi * f + j], y[gi, j * k:(j + 1) * k])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(0, 17), st.integers(1, 3))
def test_pad_to_fold(f, n, c):
    x = torch.randn(n, c, 2, 3)
    padded, n_real = pad_to_fold(x, f)
    assert n_real == n
    assert padded.shape[0] == padded_count(n, f)
    assert padded.shape[0] % f == 0 and padded.shape[0] - n < f
    assert torch.equal(padded[:n], x)
    assert torch.count_nonzero(padded[n:]) == 0


def test_round_trip_through_identity_model():
    # A "model" that maps each image's channel block to its own logits keeps per-image identity.
    f, n, c = 3, 9, 2
    x = torch.randn(n, c, 1, 1)
    folded = fold_images(x, f)  # (3, 6, 1, 1)
    logits = folded.flatten(1)  # (3, f*C): K = C
    torch.testing.assert_close(unfold_logits(logits, f), x.flatten(1))


@pytest.mark.parametrize("bad", [0, -1, 2.0, 1.5, "2", True, None])
def test_bad_fold_values(bad):
    with pytest.raises((TypeError, ValueError), match="fold must be an int >= 1"):
        fold_images(torch.zeros(4, 3, 2, 2), bad)


def test_numpy_int_fold_accepted():
    assert fold_images(torch.zeros(4, 3, 2, 2), np.int64(2)).shape == (2, 6, 2, 2)


def test_errors_say_what_to_do():
    with pytest.raises(ValueError, match="pad_to_fold"):
        fold_images(torch.zeros(5, 3, 2, 2), 2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        fold_images(torch.zeros(3, 2, 2), 1)
    with pytest.raises(ValueError, match="not a multiple of fold=4"):
        unfold_logits(torch.zeros(2, 10), 4)
    with pytest.raises(ValueError, match=r"\(N/f, f\*K\)"):
        unfold_logits(torch.zeros(2, 10, 1), 2)


@given(st.integers(1, 5000), st.integers(1, 16))
def test_round_batch_is_the_largest_whole_fold_batch(batch_size, fold):
    from foldcnn.fold import round_batch

    b = round_batch(batch_size, fold)
    assert b % fold == 0 and b >= fold
    assert b <= batch_size or batch_size < fold
    assert b + fold > batch_size  # no larger multiple of fold fits


def test_round_batch_refuses_what_is_not_a_count():
    from foldcnn.fold import round_batch

    for bad in (0, -4, 2.0, True):
        with pytest.raises(ValueError, match="batch_size"):
            round_batch(bad, 2)
    with pytest.raises(ValueError, match="fold"):
        round_batch(8, 0)


def test_numpy_folding_is_the_torch_layout_exactly():
    """The torch-free path folds numpy arrays with the same functions: same layout, same values."""

    from foldcnn.errors import UsageError

    rng = np.random.default_rng(0)
    for f in (1, 2, 3, 4):
        x = rng.integers(0, 256, (3 * f, 3, 5, 7), dtype=np.uint8)
        folded = fold_images(x, f)
        assert isinstance(folded, np.ndarray) and np.shares_memory(folded, x)  # a view, as in torch
        np.testing.assert_array_equal(folded, fold_images(torch.from_numpy(x), f).numpy())
        y = rng.standard_normal((3, 4 * f)).astype(np.float32)
        np.testing.assert_array_equal(unfold_logits(y, f), unfold_logits(torch.from_numpy(y), f).numpy())
        padded, n = pad_to_fold(x[:f + 1], f)
        want, m = pad_to_fold(torch.from_numpy(x[:f + 1]), f)
        assert n == m == f + 1 and padded.dtype == np.uint8
        np.testing.assert_array_equal(padded, want.numpy())
    with pytest.raises(UsageError, match="multiple of fold=2"):
        fold_images(np.zeros((3, 3, 4, 4), np.float32), 2)
