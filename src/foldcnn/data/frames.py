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

__all__ = ["FrameConverter", "RegionCropper", "rgb_converter"]

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


class RegionCropper:
    """Frames -> for each box ``(x, y, w, h)`` its crops uint8 (k, 3, h, w), in the order added,
    converting only the boxes' pixels to RGB.

    A screen scraper needs a few small regions of a large frame; converting all of a 1280x720
    frame to RGB costs more than decoding it. For 8-bit 4:2:0 frames each box, widened to even
    coordinates (so its chroma samples stay aligned), is copied plane by plane into one tall 4:2:0
    frame per batch and converted in one swscale call. That gives swscale's own pixels only
    while its 4:2:0 -> RGB conversion is pixel by pixel, as for :class:`FrameConverter`: the first
    frame of each geometry is checked against the full frame's conversion and any difference
    sends that geometry the reference way (the full frame converted, then cut).
    ``boxes_for(width, height)`` gives the boxes for a frame size (called once per size).
    """

    def __init__(self, boxes_for, batch: int = 16) -> None:
        self.boxes_for, self.batch = boxes_for, batch
        self._rgb = None
        self._geometry: dict[tuple, tuple] = {}  # frame key -> (boxes, _Tall or None)
        self._current = None
        self._done: list[list[np.ndarray]] = []
        self.pending = 0
        self.frame_size: tuple[int, int] | None = None  # (width, height) of the latest frame

    def _for(self, frame) -> tuple:
        key = _key(frame)
        if key not in self._geometry:
            boxes = [tuple(int(v) for v in b) for b in self.boxes_for(frame.width, frame.height)]
            tall = None
            if key[0] in FAST_FORMATS and frame.width % 2 == 0 and frame.height % 2 == 0:
                tall = _Tall(key, boxes, self.batch)
                if not (tall.writable and self._agrees(frame, boxes, tall)):
                    tall = None
            self._geometry[key] = (boxes, tall)
        return self._geometry[key]

    def _agrees(self, frame, boxes, tall: _Tall) -> bool:
        tall.add(frame)
        fast = tall.take()
        ref = self._reference(frame, boxes)
        return all(np.array_equal(a[0], b) for a, b in zip(fast, ref))

    def _reference(self, frame, boxes) -> list[np.ndarray]:
        if self._rgb is None:
            self._rgb = rgb_converter()
        rgb = self._rgb(frame)
        return [np.ascontiguousarray(rgb[y:y + h, x:x + w].transpose(2, 0, 1)) for x, y, w, h in boxes]

    def _finish(self) -> None:
        if self._current is not None and self._current.n:
            self._done.append(self._current.take())

    def add(self, frame) -> None:
        self.frame_size = frame.width, frame.height
        boxes, tall = self._for(frame)
        if tall is not self._current:
            self._finish()
            self._current = tall
        if tall is None:
            self._done.append([c[None] for c in self._reference(frame, boxes)])
        else:
            if tall.n == tall.batch:
                self._finish()
            tall.add(frame)
        self.pending += 1

    def take(self) -> list[np.ndarray]:
        """Per box, uint8 (k, 3, h, w): the frames added since the last take."""
        self._finish()
        done, self._done, self.pending = self._done, [], 0
        if not done:
            return []
        if len(done) == 1:
            return done[0]
        return [np.concatenate(parts) for parts in zip(*done)]


class _Tall:
    """The boxes of ``batch`` frames of one geometry, stacked in one tall 4:2:0 frame."""

    def __init__(self, key: tuple, boxes: list[tuple[int, int, int, int]], batch: int) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        fmt, width, height, _, _ = key
        self.boxes, self.batch, self.n = boxes, batch, 0
        self.src_rows = (height, height // 2, height // 2)
        self.even = []  # (x0, y0, w2, h2): each box widened to even coordinates and sizes
        for x, y, w, h in boxes:
            x0, y0 = x - x % 2, y - y % 2
            x1, y1 = min(width, x + w + (x + w) % 2), min(height, y + h + (y + h) % 2)
            self.even.append((x0, y0, x1 - x0, y1 - y0))
        self.width = max(2, max(w2 for _, _, w2, _ in self.even))
        self.per_frame = sum(h2 for _, _, _, h2 in self.even)
        self.tall = av.VideoFrame(self.width, self.per_frame * batch, fmt)
        self.reformatter = VideoReformatter()
        self.dst = []
        for p in range(3):
            plane = self.tall.planes[p]
            rows = self.per_frame * batch // (1 if p == 0 else 2)
            self.dst.append(np.frombuffer(memoryview(plane), np.uint8)[: rows * plane.line_size]
                            .reshape(rows, plane.line_size))

    @property
    def writable(self) -> bool:
        return all(d.flags.writeable for d in self.dst)

    def add(self, frame) -> None:
        if self.n == 0:
            _copy_colour_tags(frame, self.tall)
        row = self.n * self.per_frame
        for p in range(3):
            plane = frame.planes[p]
            src = _plane(plane, self.src_rows[p]).reshape(self.src_rows[p], plane.line_size)
            s = 1 if p == 0 else 2
            r = row // s
            for x0, y0, w2, h2 in self.even:
                self.dst[p][r:r + h2 // s, : w2 // s] = src[y0 // s:(y0 + h2) // s, x0 // s:(x0 + w2) // s]
                r += h2 // s
        self.n += 1

    def take(self) -> list[np.ndarray]:
        k, self.n = self.n, 0
        rgb = self.reformatter.reformat(self.tall, format="rgb24").to_ndarray()
        rgb = rgb.reshape(self.batch, self.per_frame, self.width, 3)[:k]
        out, r = [], 0
        for (x, y, w, h), (x0, y0, _, h2) in zip(self.boxes, self.even):
            out.append(np.ascontiguousarray(rgb[:, r + y - y0:r + y - y0 + h, x - x0:x - x0 + w].transpose(0, 3, 1, 2)))
            r += h2
        return out
