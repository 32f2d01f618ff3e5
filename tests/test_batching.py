"""foldcnn.infer.batching: assembled batches are exact, padded to whole folds, and with two
buffers the previous batch survives the assembly of the next (the engine may still read it)."""

import numpy as np
import torch

from foldcnn.infer.batching import BatchAssembler, assemble


def _pieces(seed: int, sizes=(3, 4)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n, 3, 5, 6), dtype=torch.uint8, generator=g) for n in sizes]


def test_two_buffers_keep_the_previous_batch_intact():
    a, b, c = _pieces(0), _pieces(1), _pieces(2)
    want_a, k = assemble(a, 4)
    assert k == 7 and want_a.shape[0] == 8 and not want_a[7:].any()  # padded to two folds of 4
    np.testing.assert_array_equal(want_a[:7], torch.cat(a).float().div(255).numpy())
    two = BatchAssembler(buffers=2)
    xa, _ = two(a, 4)
    xb, _ = two(b, 4)  # assembled while the engine may still read xa
    np.testing.assert_array_equal(xa, want_a)
    np.testing.assert_array_equal(xb, assemble(b, 4)[0])
    xc, _ = two(c, 4)  # the third batch takes the first buffer again: xa is done by then
    assert np.shares_memory(xc, xa) and not np.shares_memory(xb, xa)
    one = BatchAssembler()
    assert np.shares_memory(one(a, 4)[0], one(b, 4)[0])  # one buffer: reused every time
