"""Decoded video frames (PyAV) -> uint8 RGB arrays (k, 3, H, W) at the model's size, in batches.

The reference conversion is FFmpeg's (swscale) to RGB at the frame's own size, then a nearest-
neighbour resize in numpy (:func:`foldcnn.data.resize.nearest_index`, what training and NoScope use). Each call into
swscale has a fixed cost whatever the frame's size (docs/notebook/2026-12-07-end-to-end.md),
more than a 320x240 conversion itself, and converting every pixel of a frame to
keep 50 x 50 of them wastes the rest. So for 8-bit 4:2:0 frames (H.264's usual yuv420p) and a
nearest-neighbour resize, :class:`FrameConverter` copies only the sampled luma and chroma
samples of each frame into one tall 4:2:0 frame (each sampled pixel as a 2 x 2 block with its own
chroma sample, so every output pixel sees exactly the Y, U and V it sees in the full frame) and
converts a whole batch in one swscale call: several times less time per frame.

That is exact only while swscale converts each pixel from its own (Y, U, V) alone (its unscaled
4:2:0 -> RGB path). Every frame geometry (format, size, colour space and range) is checked once
per process on a random-noise frame, and the first frame of each geometry in each converter is
checked on the real frame: both ways must give the same bytes, else that geometry takes the
reference path (frames of odd height do: swscale's pixel-by-pixel converter needs an even height).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from foldcnn.data.resize import nearest_index, resize_rgb

__all__ = ["FrameConverter", "rgb_converter"]

FAST_FORMATS = ("yuv420p", "yuvj420p")


def rgb_converter():
    """``frame -> uint8 (H, W, 3) RGB`` through one reused FFmpeg colour converter (swscale).

    ``frame.to_ndarray(format="rgb24")`` builds a new converter for every frame; reusing one gives
    the same pixels (tested) at a higher rate (measured: docs/notebook/2026-12-07-end-to-end.md).
    """
    from av.video.reformatter import VideoReformatter

    reformatter = VideoReformatter()
    return lambda frame: reformatter.reformat(frame, format="rgb24").to_ndarray()


def _plane(plane, rows: int) -> np.ndarray:
    """A frame plane as a flat uint8 view (rows x line_size bytes)."""
    return np.frombuffer(memoryview(plane), np.uint8)[: rows * plane.line_size]


def _key(frame) -> tuple:
    return (frame.format.name, frame.width, frame.height, getattr(frame, "colorspace", None),
            getattr(frame, "color_range", None))


def _copy_colour_tags(src, dst) -> None:
    for name in ("colorspace", "color_range"):
        try:
            setattr(dst, name, getattr(src, name))
        except (AttributeError, TypeError, ValueError):  # an older PyAV: the checks decide
            pass


class _Sampled:
    """The fast path for one frame geometry: sampled 2 x 2 blocks of ``batch`` frames in one tall
    4:2:0 frame, converted together."""

    def __init__(self, key: tuple, size: tuple[int, int], batch: int) -> None:
        import av

        fmt, width, height, _, _ = key
        h, w = size
        self.rows, self.cols = nearest_index(height, h), nearest_index(width, w)
        self.size, self.batch, self.n = size, batch, 0
        self.tall = av.VideoFrame(2 * w, 2 * h * batch, fmt)
        self.src_rows = (height, (height + 1) // 2, (height + 1) // 2)
        self._index: dict[tuple, list[np.ndarray]] = {}
        self.dst = []
        for p, (per_frame, width_p) in enumerate(((2 * h, 2 * w), (h, w), (h, w))):
            plane = self.tall.planes[p]
            view = np.frombuffer(memoryview(plane), np.uint8)[: per_frame * batch * plane.line_size]
            self.dst.append(view.reshape(batch, per_frame, plane.line_size)[:, :, :width_p])
        from av.video.reformatter import VideoReformatter

        self.reformatter = VideoReformatter()

    @property
    def writable(self) -> bool:
        return all(d.flags.writeable for d in self.dst)

    def _index_for(self, line_sizes: tuple) -> list[np.ndarray]:
        """Flat indices into each source plane (rows of ``line_sizes`` bytes), laid out as one
        frame's block of the tall frame: each sampled luma sample as 2 x 2, its chroma once."""
        index = self._index.get(line_sizes)
        if index is None:
            rows, cols = self.rows, self.cols
            luma = np.repeat(rows, 2)[:, None] * line_sizes[0] + np.repeat(cols, 2)[None, :]
            index = [luma] + [(rows // 2)[:, None] * ls + (cols // 2)[None, :] for ls in line_sizes[1:3]]
            self._index[line_sizes] = index
        return index

    def add(self, frame) -> None:
        if self.n == 0:
            _copy_colour_tags(frame, self.tall)
        planes = frame.planes
        index = self._index_for(tuple(p.line_size for p in planes))
        for p in range(3):
            np.take(_plane(planes[p], self.src_rows[p]), index[p], out=self.dst[p][self.n], mode="clip")
        self.n += 1

    def take(self) -> np.ndarray:
        """The frames added since the last take -> uint8 (k, 3, h, w)."""
        k, self.n = self.n, 0
        if k == 0:
            return np.empty((0, 3, *self.size), np.uint8)
        rgb = self.reformatter.reformat(self.tall, format="rgb24").to_ndarray()
        h, w = self.size
        blocks = rgb.reshape(self.batch, 2 * h, 2 * w, 3)[:k, ::2, ::2]
        return np.ascontiguousarray(blocks.transpose(0, 3, 1, 2))


def _noise_frame(key: tuple):
    import av

    fmt, width, height, *_ = key
    frame = av.VideoFrame(width, height, fmt)
    rng = np.random.default_rng(0)
    for plane in frame.planes:
        view = np.frombuffer(memoryview(plane), np.uint8)
        view[:] = rng.integers(0, 256, view.shape, dtype=np.uint8)
    return frame


def _reference(frame, size: tuple[int, int]) -> np.ndarray:
    rgb = rgb_converter()(frame)
    rows, cols = nearest_index(rgb.shape[0], size[0]), nearest_index(rgb.shape[1], size[1])
    return np.ascontiguousarray(rgb[rows[:, None], cols[None, :]].transpose(2, 0, 1))


def _agrees(frame, key: tuple, size: tuple[int, int]) -> bool:
    sampled = _Sampled(key, size, batch=1)
    if not sampled.writable:
        return False
    sampled.add(frame)
    return np.array_equal(sampled.take()[0], _reference(frame, size))


@lru_cache(maxsize=32)
def _geometry_ok(key: tuple, size: tuple[int, int]) -> bool:
    """Whether the sampled path gives swscale's own pixels for this geometry (a noise frame)."""
    frame = _noise_frame(key)
    for name in ("colorspace", "color_range"):
        try:
            setattr(frame, name, key[3 if name == "colorspace" else 4])
        except (AttributeError, TypeError, ValueError):
            pass
    return _agrees(frame, key, size)


class FrameConverter:
    """Frames -> uint8 (k, 3, h, w) RGB at ``size`` (None: the frame's own) with ``resize``
    ("nearest" or "bilinear"), in the order added; ``take()`` returns what was added since the
    last take. Nearest-neighbour resizes of 4:2:0 frames go the sampled way (module docstring),
    everything else frame by frame through swscale and ``resize`` (foldcnn.data.readers)."""

    def __init__(self, size: tuple[int, int] | None, resize: str = "nearest", batch: int = 64) -> None:
        self.size, self.resize, self.batch = size, resize, batch
        self._rgb = None
        self._fast: dict[tuple, _Sampled | None] = {}
        self._current: _Sampled | None = None
        self._done: list[np.ndarray] = []
        self.pending = 0

    def _sampled_for(self, frame) -> _Sampled | None:
        key = _key(frame)
        if key not in self._fast:
            ok = (self.size is not None and self.resize == "nearest" and key[0] in FAST_FORMATS
                  and (frame.height, frame.width) != self.size and _geometry_ok(key, self.size)
                  and _agrees(frame, key, self.size))
            self._fast[key] = _Sampled(key, self.size, self.batch) if ok else None
        return self._fast[key]

    def _finish_current(self) -> None:
        if self._current is not None and self._current.n:
            self._done.append(self._current.take())

    def add(self, frame) -> None:
        sampled = self._sampled_for(frame)
        if sampled is not self._current:
            self._finish_current()
            self._current = sampled
        if sampled is not None:
            if sampled.n == sampled.batch:
                self._finish_current()
            sampled.add(frame)
        else:
            self._done.append(self._slow(frame)[None])
        self.pending += 1

    def _slow(self, frame) -> np.ndarray:
        if self._rgb is None:
            self._rgb = rgb_converter()
        arr = resize_rgb(self._rgb(frame), self.size, self.resize)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def take(self) -> np.ndarray:
        """uint8 (k, 3, h, w): the frames added since the last take, in order."""
        self._finish_current()
        done, self._done, self.pending = self._done, [], 0
        if len(done) == 1:
            return done[0]
        if not done:
            h, w = self.size or (0, 0)
            return np.empty((0, 3, h, w), np.uint8)
        if len({d.shape[1:] for d in done}) > 1:  # native sizes that change within a video
            raise ValueError("frames of different sizes in one batch; pass a size")
        return np.concatenate(done)
