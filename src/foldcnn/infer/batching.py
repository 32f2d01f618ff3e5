"""Batch assembly for the Predictor: cut exact batches from a stream of chunks, pad the last
fold, softmax. numpy rather than torch for data movement: torch's intra-op threads made a
32-piece torch.cat take hundreds of times longer than np.concatenate on a busy small CPU.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import chain

import numpy as np

from foldcnn.fold import padded_count
from foldcnn.infer.sources import Chunk
from foldcnn.tensors import is_tensor, tensor_to_numpy

__all__ = ["BatchAssembler", "ChunkBuffer", "assemble", "softmax"]


class ChunkBuffer:
    """Decoded chunks waiting for a batch; ``take(k)`` cuts exactly k images off the front."""

    def __init__(self) -> None:
        self.parts: deque[Chunk] = deque()
        self.n = 0

    def add(self, c: Chunk) -> None:
        self.parts.append(c)
        self.n += len(c.indices)

    def take(self, k: int) -> tuple[list[np.ndarray], Sequence[int], Sequence, Sequence]:
        pieces: list[Chunk] = []
        while k:
            c = self.parts[0]
            m = len(c.indices)
            if m <= k:
                pieces.append(self.parts.popleft())
            else:
                pieces.append(Chunk(c.images[:k], c.indices[:k], c.sources[:k], c.frames[:k]))
                self.parts[0] = Chunk(c.images[k:], c.indices[k:], c.sources[k:], c.frames[k:])
                m = k
            k -= m
            self.n -= m

        def cat(seqs):
            return seqs[0] if len(seqs) == 1 else list(chain.from_iterable(seqs))

        return ([p.images for p in pieces], cat([p.indices for p in pieces]), cat([p.sources for p in pieces]),
                cat([p.frames for p in pieces]))


class BatchAssembler:
    """Pieces of decoded images -> one float32 (k', C, H, W) batch in [0, 1], written into one of
    ``buffers`` buffers allocated once and reused in turn: with 2, a batch can be assembled while
    the engine still reads the previous one (the caller guarantees that the batch before that is
    done). uint8 pieces are scaled on the way in (``x / 255``, bit-identical to
    ``x.float() / 255``); k' = k rounded up to a multiple of ``fold``, rows k.. are zero images
    (padding, outputs discarded)."""

    def __init__(self, buffers: int = 1) -> None:
        self._bufs: list[np.ndarray | None] = [None] * max(1, buffers)
        self._turn = 0

    def __call__(self, images: list[np.ndarray], fold: int) -> tuple[np.ndarray, int]:
        k = sum(t.shape[0] for t in images)
        target = padded_count(k, fold)
        shape = tuple(images[0].shape[1:])
        turn, self._turn = self._turn, (self._turn + 1) % len(self._bufs)
        buf = self._bufs[turn]
        if buf is None or buf.shape[1:] != shape or buf.shape[0] < target:
            buf = self._bufs[turn] = np.empty((target, *shape), np.float32)
        out = buf[:target]
        pos = 0
        for t in images:
            a = tensor_to_numpy(t) if is_tensor(t) else t
            n = a.shape[0]
            out[pos:pos + n] = a
            if a.dtype == np.uint8:
                # A cast copy, then an in-place float divide: both vectorize, and together took about half
                # the time of one divide casting on the way (1,024 crops of 22x52).
                np.divide(out[pos:pos + n], np.float32(255), out=out[pos:pos + n])
            pos += n
        out[k:] = 0.0
        return out, k


def assemble(images: list[np.ndarray], fold: int) -> tuple[np.ndarray, int]:
    """Pieces of images -> (a new float32 (k', C, H, W) array in [0, 1], k); see BatchAssembler."""
    return BatchAssembler()(images, fold)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float32 logits (k, K), numerically stable, in numpy."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z
