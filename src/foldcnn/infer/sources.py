"""Any input -> a stream of decode jobs -> :class:`Chunk` s of images at the model's size, in order.

Accepted inputs (``source``):

* a torch tensor (N, C, H, W), uint8 (0-255) or float in [0, 1] (read as a numpy array);
* a numpy array (N, C, H, W) or (N, H, W, C), uint8 or float in [0, 1]; the layout is the one
  whose channel axis has the model's C channels; when both axes do, the one whose other two
  axes are the model's (H, W); when that still leaves both, a ValueError asks for a transpose;
* a PIL image, a file path, a folder (its images and videos, recursively, sorted by path,
  hidden entries skipped), a glob (``"frames/*.png"``, sorted) or a video file (every
  ``stride``-th frame);
* an array file that needs no decoding: ``.npy``, ``.safetensors``, Parquet or Arrow IPC holding
  uint8 (N, C, H, W) or (N, H, W, C) images (see foldcnn.infer.array_files);
* an iterable (list, generator) of any of these, where a 3-D tensor / array is one image
  (C, H, W) (numpy also (H, W, C)) and a 4-D one is a chunk of images.

Files are converted to RGB (grey, palette, RGBA, 16-bit: see foldcnn.data.readers). With
``resize=True`` images of another size are resized to the model's (H, W) with Pillow:
bilinear for images and nearest neighbour for video frames (what NoScope and ``load_video``
use) unless ``resize_mode`` names one for all; with ``resize=False`` they are an error naming
the file and both sizes.

Fold grouping follows the input order with one isolation rule: a video's frames are folded only
with frames of the same video (each :class:`Chunk` names its ``stream``; the Predictor pads, or
sends to the fallback, the partial last fold of a stream when the next stream begins). Images,
PIL images and arrays between videos form one stream in input order. The Ray engine
(foldcnn.scaleout) expands inputs with :func:`expand_path` and decodes with
:func:`load_image_file` / :func:`iter_video`, so both number and group inputs alike.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterator, Sequence
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from foldcnn.data.readers import (
    IMAGE_EXTENSIONS,
    DataReadError,
    decode_rgb,
    iter_folder,
    resize_rgb,
    to_rgb,
)
from foldcnn.errors import MissingInputError, UsageError, UsageTypeError
from foldcnn.infer.array_files import count_array_file, is_array_file, iter_array_file
from foldcnn.infer.arrays import ImageSizeError, as_nchw, fit_images, is_array, to_unit_float
from foldcnn.background import Ahead
from foldcnn.infer.results import SkippedInput

__all__ = ["VIDEO_EXTENSIONS", "Chunk", "FilesJob", "files_per_job", "InputSpec", "classify_file", "count_inputs", "decode_files",
           "expand_path", "is_video", "iter_expand_path", "iter_jobs", "iter_video", "load_image_file"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
FILES_PER_JOB = 32  # files decoded per job in a thread: amortizes thread hand-off, keeps order cheap
# ... per job in a decoding process: each job's trip through the process pool costs the parent CPU
# that the engine needs. 128 instead of 32 files a job was faster end to end in three of four
# configurations and within the spread in the fourth
# (docs/notebook/2026-12-07-end-to-end.md, with the command and machine).
FILES_PER_PROCESS_JOB = 128
FRAMES_PER_JOB = 64
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class InputSpec:
    """What the model takes and how inputs are adapted to it."""

    shape: tuple[int, int, int]  # (C, H, W) of one image
    resize: bool = True
    resize_mode: str | None = None  # None: bilinear for images, nearest for video frames
    on_error: str = "raise"  # for files and videos: "raise" or "skip"
    stride: int = 1  # video: every stride-th frame
    max_pixels: int | None = None
    chunk: int = 1024  # images per job for arrays
    keyframes: bool = False  # video: decode only the key frames
    videos_ahead: int = 0  # videos decoding in background threads beyond the current one
    resume_after: int = -1  # image files at input positions up to this one are not decoded (a resumed run)


@dataclass
class Chunk:
    """Decoded images, a numpy array (n, C, H, W) uint8 or float32 in [0, 1] (None when n == 0)
    and, per image, its input position, source file and video frame; plus inputs skipped in this
    stretch."""

    images: np.ndarray | None
    indices: Sequence[int]
    sources: Sequence[str | None]
    frames: Sequence[int | None]
    skipped: list[SkippedInput] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files in a folder without an image extension
    stream: object = None  # fold stream: None for images and arrays, the video's first position for a video
    incomplete: list[SkippedInput] = field(default_factory=list)  # videos cut short: their frames before it kept
    seconds_decode: float = 0.0  # time the decoder spent on this chunk (in whatever thread or process)
    in_process: bool = False  # decoded in a decoding process (else in a thread of this one)


def files_per_job(processes) -> int:
    """Image files per decode job: FILES_PER_PROCESS_JOB with a pool of decoding processes, else
    FILES_PER_JOB."""
    return FILES_PER_JOB if processes is None else FILES_PER_PROCESS_JOB


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _fit(x: np.ndarray, spec: InputSpec, what: str, contiguous: bool = True) -> np.ndarray:
    return fit_images(x, spec.shape, spec.resize, spec.resize_mode, what, contiguous)


def _array_job(x: np.ndarray, start: int, spec: InputSpec, source: str | None = None) -> Callable[[], Chunk]:
    def run() -> Chunk:
        t = _fit(x, spec, f"images in {source}" if source else "images", contiguous=False)
        n = t.shape[0]
        return Chunk(t, range(start, start + n), [source] * n, [None] * n)
    run.inline = True  # in memory already: cheaper in the consumer's thread (see ordered_map)
    return run


# ---------------------------------------------------------------------------- single images
def load_image_file(path, spec: InputSpec) -> np.ndarray:
    """One image file -> a uint8 array (1, 3, H, W) at the model's size (resize, resize_mode and
    max_pixels of ``spec``); DataReadError naming the file when it cannot be used."""
    if spec.shape[0] != 3:
        raise UsageError(f"image files are decoded as RGB (3 channels) but the model takes {spec.shape[0]}; "
                         "pass tensors (N, C, H, W) instead")
    arr, _ = decode_rgb(Path(path), spec.max_pixels)
    return _fit(np.ascontiguousarray(arr.transpose(2, 0, 1))[None], spec, f"image {path}")


def _load_single(kind: str, obj, spec: InputSpec) -> np.ndarray:
    """One image -> (1, C, H, W) at the model's size."""
    if kind == "file":
        return load_image_file(obj, spec)
    if kind == "pil":
        if spec.shape[0] != 3:
            raise UsageError(f"PIL images are converted to RGB but the model takes {spec.shape[0]} channels")
        arr = to_rgb(obj)
        return _fit(np.ascontiguousarray(arr.transpose(2, 0, 1))[None], spec, "PIL image")
    return _fit(as_nchw(obj[None], spec.shape, "image"), spec, "image")


def _singles_job(items: list[tuple[str, object]], start: int, spec: InputSpec) -> Callable[[], Chunk]:
    if all(kind == "file" for kind, _ in items):
        done = min(len(items), max(0, spec.resume_after - start + 1))  # written by the run resumed
        if done == len(items):
            return _empty_job
        return FilesJob([str(obj) for _, obj in items[done:]], start + done, spec)

    def run() -> Chunk:
        imgs, idx, srcs, skipped = [], [], [], []
        for k, (kind, obj) in enumerate(items):
            try:
                img = _load_single(kind, obj, spec)
            except DataReadError as e:
                if spec.on_error == "raise" or kind != "file":
                    raise
                skipped.append(SkippedInput(start + k, str(obj), getattr(e, "reason", str(e))))
                continue
            imgs.append(img)
            idx.append(start + k)
            srcs.append(str(obj) if kind == "file" else None)
        arrays = imgs
        if len({a.dtype for a in arrays}) > 1:  # a list mixing uint8 and float images
            arrays = [to_unit_float(a) for a in arrays]
        images = np.concatenate(arrays) if arrays else None
        return Chunk(images, idx, srcs, [None] * len(idx), skipped)
    return run


def _empty_job() -> Chunk:
    return Chunk(None, [], [], [])


_empty_job.inline = True


def decode_files(paths: list[str], spec: InputSpec) -> tuple[np.ndarray, list[int], list[tuple[int, str]], float]:
    """Image files -> (uint8 (n, C, H, W) at the model's size, positions in ``paths`` of the
    images read, (position, reason) of the files that failed, seconds spent).

    numpy and Pillow only, written straight into one preallocated array: this is what a decoding
    process runs. A failure is returned as data (exceptions with extra fields do not cross a
    process boundary intact); the caller raises it again where ``on_error="raise"``.
    """
    t0 = time.perf_counter()
    if spec.shape[0] != 3:
        raise UsageError(f"image files are decoded as RGB (3 channels) but the model takes {spec.shape[0]}; "
                         "pass tensors (N, C, H, W) instead")
    want = tuple(spec.shape[1:])
    out = np.empty((len(paths), *spec.shape), np.uint8)
    ok: list[int] = []
    failed: list[tuple[int, str]] = []
    for k, path in enumerate(paths):
        try:
            arr, _ = decode_rgb(Path(path), spec.max_pixels)
            if arr.shape[:2] != want:
                if not spec.resize:
                    raise ImageSizeError(f"image {path}", arr.shape[:2], want)
                arr = resize_rgb(arr, want, spec.resize_mode or "bilinear")
        except DataReadError as e:
            failed.append((k, getattr(e, "reason", str(e))))
            if spec.on_error == "raise":
                break
            continue
        out[len(ok)] = arr.transpose(2, 0, 1)
        ok.append(k)
    return out[:len(ok)], ok, failed, time.perf_counter() - t0


class FilesJob:
    """Decode a run of image files into one Chunk: in a thread (call it) or in a decoding
    process (``remote`` there, ``finish`` here). Positions start at ``start``."""

    def __init__(self, paths: list[str], start: int, spec: InputSpec) -> None:
        self.paths, self.start, self.spec = paths, start, spec

    @property
    def remote(self) -> tuple | None:
        # A short run (one image, the tail of a list) is decoded in a thread: forking the
        # decoding processes for it would cost more than it saves.
        if len(self.paths) < FILES_PER_JOB // 2:
            return None
        return decode_files, (self.paths, self.spec)

    def __call__(self) -> Chunk:
        return self.finish(decode_files(self.paths, self.spec))

    def describe(self) -> str:
        first, last = self.paths[0], self.paths[-1]
        return f"the {len(self.paths)} file(s) {first}" + (f" .. {last}" if len(self.paths) > 1 else "")

    def finish(self, answer) -> Chunk:
        images, ok, failed, seconds = answer
        if failed and self.spec.on_error == "raise":
            k = failed[0][0]
            _load_single("file", Path(self.paths[k]), self.spec)  # raises the reader's own error
            raise DataReadError(f"cannot read image {self.paths[k]}: {failed[0][1]}")  # if it read this time
        skipped = [SkippedInput(self.start + k, self.paths[k], reason) for k, reason in failed]
        chunk = Chunk(images if ok else None, [self.start + k for k in ok],
                      [self.paths[k] for k in ok], [None] * len(ok), skipped)
        chunk.seconds_decode = seconds
        return chunk


# ----------------------------------------------------------------------------------- videos
def iter_video(path, spec: InputSpec) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame number, uint8 array (3, H, W))`` for every ``spec.stride``-th frame of a video, at the
    model's size (nearest neighbour unless ``spec.resize_mode`` names another; with
    ``resize=False`` a frame of another size is an ImageSizeError)."""
    from foldcnn.data import readers  # looked up at call time, so tests can stand in a decoder

    _check_video_spec(spec)
    want = spec.shape[1:]
    for number, img in readers.iter_video_arrays(path, input_size=want if spec.resize else None,
                                                 stride=spec.stride, resize=spec.resize_mode or "nearest",
                                                 keyframes=spec.keyframes):
        if tuple(img.shape[1:]) != want:
            raise ImageSizeError(f"video {path}", tuple(img.shape[1:]), want)
        yield number, img


def _check_video_spec(spec: InputSpec) -> None:
    if spec.shape[0] != 3:
        raise UsageError(f"video frames are RGB (3 channels) but the model takes {spec.shape[0]}")


def _iter_video_batches(path, spec: InputSpec) -> Iterator[tuple[list[int], np.ndarray]]:
    """:func:`iter_video` a batch of FRAMES_PER_JOB frames at a time: ``(numbers, uint8 (k, 3, H, W))``."""
    from foldcnn.data import readers

    _check_video_spec(spec)
    want = tuple(spec.shape[1:])
    for numbers, images, _ in readers.iter_video_batches(path, input_size=want if spec.resize else None,
                                                         stride=spec.stride, resize=spec.resize_mode or "nearest",
                                                         keyframes=spec.keyframes, batch=FRAMES_PER_JOB):
        if numbers and tuple(images.shape[2:]) != want:
            raise ImageSizeError(f"video {path}", tuple(images.shape[2:]), want)
        if numbers:
            yield numbers, images


def _frames_job(path: Path, images: np.ndarray, numbers: list[int], pos: int,
                stream: int) -> Callable[[], Chunk]:
    return lambda: Chunk(images, range(pos, pos + len(numbers)),
                         [str(path)] * len(numbers), numbers, stream=stream)


def _video_jobs(path: Path, start: int, spec: InputSpec,
                processes=None) -> Iterator[tuple[Callable[[], Chunk], int]]:
    """Decode into jobs of frames; yields ``(job, inputs it covers)``. With ``processes`` (a
    pool of decoding processes) a long video is cut at key frames and its segments decode in
    those processes (foldcnn.data.segments), else it decodes here (PyAV decodes one frame after
    another; it threads inside) in jobs of FRAMES_PER_JOB frames. Every chunk names the video's
    own fold stream (``start``)."""
    pos = start
    try:
        segmented = _segment_jobs(path, start, spec, processes) if processes is not None else None
        done = 0  # frames of the video already covered (stride-skipped ones included)
        if segmented is not None:
            for job, n, covered in segmented:
                done = covered
                if job is None:  # a segment did not decode as planned: the rest sequentially
                    break
                yield job, n
                pos += n
            else:
                return
        for numbers, images in _iter_video_batches(path, spec):
            if numbers[-1] < done:
                continue
            keep = [k for k, number in enumerate(numbers) if number >= done]
            if len(keep) < len(numbers):
                numbers, images = [numbers[k] for k in keep], images[keep[0]:]
            yield _frames_job(path, images, numbers, pos, start), len(numbers)
            pos += len(numbers)
    except (DataReadError, FileNotFoundError) as e:
        if spec.on_error == "raise":
            raise
        reason = getattr(e, "reason", None) or str(e)
        if getattr(e, "frames_read", 0):  # some frames were predicted: the video is incomplete, not skipped
            cut = SkippedInput(pos, str(path), f"{reason} (the frames before it were predicted)")
            yield (lambda: Chunk(None, [], [], [], incomplete=[cut], stream=start)), 0
        else:
            skip = SkippedInput(pos, str(path), reason)
            yield (lambda: Chunk(None, [], [], [], [skip], stream=start)), 1


class _SegmentJob:
    """One key-frame segment of a video, for :func:`foldcnn.infer.pipeline.resolve_remote`."""

    def __init__(self, path: Path, segment, spec: InputSpec) -> None:
        from foldcnn.data.segments import decode_segment

        self.path, self.segment = path, segment
        self.remote = decode_segment, (str(path), segment, tuple(spec.shape[1:]), spec.stride,
                                       spec.resize_mode or "nearest")

    def describe(self) -> str:
        last = self.segment.first + self.segment.frames - 1
        return f"frames {self.segment.first}..{last} of the video {self.path}"


def _segment_jobs(path: Path, start: int, spec: InputSpec, processes):
    """``(job, inputs it covers, frames of the video covered)`` per segment, decoded in
    ``processes`` with ``processes.workers + 1`` segments in flight; ``(None, 0, frames
    covered)`` where a segment did not decode as planned (the caller goes on sequentially).
    None where the video is not cut (short, key frames only, native size, no plan)."""
    from foldcnn.data.readers import VideoReadError, VideoTruncatedError
    from foldcnn.data.segments import plan_segments
    from foldcnn.infer.pipeline import resolve_remote

    if spec.keyframes or not spec.resize or spec.shape[0] != 3 or not is_video(path):
        return None
    plan = plan_segments(path)
    if plan is None:
        return None

    def run():
        pos = start
        inflight: deque = deque()
        todo = iter(plan.segments)

        def submit() -> None:
            segment = next(todo, None)
            if segment is not None:
                job = _SegmentJob(path, segment, spec)
                inflight.append((job, processes.submit(job.remote[0], *job.remote[1])))

        for _ in range(getattr(processes, "workers", 1) + 1):
            submit()
        try:
            while inflight:
                job, fut = inflight.popleft()
                answer = resolve_remote(job, fut)
                submit()
                segment = job.segment
                if answer.mismatch is not None:
                    yield None, 0, segment.first
                    return
                n = len(answer.numbers)
                if n:
                    chunk = Chunk(answer.images, range(pos, pos + n), [str(path)] * n,
                                  answer.numbers, stream=start)
                    chunk.seconds_decode, chunk.in_process = answer.seconds, True
                    yield (lambda c=chunk: c), n, segment.first + answer.decoded
                    pos += n
                if answer.error is not None:
                    at = segment.first + answer.decoded
                    raise VideoReadError(f"cannot read video {path}: decoding failed at frame {at}: {answer.error}",
                                         frames_read=at)
        finally:
            for _, fut in inflight:
                fut.cancel()
        if plan.frames < plan.declared:
            raise VideoTruncatedError(f"video {path} is truncated: decoding stopped at frame {plan.frames} but its "
                                      f"container declares {plan.declared} frames", frames_read=plan.frames)
    return run()


# ------------------------------------------------------------------------------------ inputs
def classify_file(path: Path) -> str:
    """"video" or "file" (an image): by extension, else by what Pillow or PyAV can open."""
    if is_video(path):
        return "video"
    if is_array_file(path):
        return "arrays"
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return "file"
    try:  # unknown extension: Pillow only reads the header here
        with Image.open(path):
            return "file"
    except Exception:  # noqa: BLE001 - not an image Pillow knows
        pass
    try:
        import av

        with av.open(str(path)) as c:
            if c.streams.video:
                return "video"
    except Exception:  # noqa: BLE001 - not a video either: decoded as an image, whose error names it
        pass
    return "file"


def expand_path(p: str | os.PathLike, top: bool = True) -> list[tuple[str, object]]:
    """One path, folder or glob -> ``[(kind, Path), ...]`` in input order, kind "file" (an
    image) or "video", plus ``("ignored", [files])`` for a folder's other files. Folders: images
    and videos, recursively, sorted by path; globs: sorted matches. Every engine numbers inputs
    by this list (the ``index`` column)."""
    return list(iter_expand_path(p, top))


def iter_expand_path(p: str | os.PathLike, top: bool = True) -> Iterator[tuple[str, object]]:
    """:func:`expand_path` item by item: a folder's files come as its sub-folders are listed, so
    decoding starts before a large tree is listed to its end (on 8,192 crops in 11 folders the
    whole listing took about 0.1 s, during which the decoders had nothing to do)."""
    path = Path(p)
    if path.is_dir():
        ignored: list[str] = []
        found = False
        exts = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
        for f in iter_folder(path, recursive=True):
            suffix = f.suffix.lower()
            if suffix not in exts:
                ignored.append(str(f))
                continue
            found = True
            yield ("video" if suffix in VIDEO_EXTENSIONS else "file"), f
        if not found:
            raise MissingInputError(f"no image or video files ({', '.join(IMAGE_EXTENSIONS)}; "
                                    f"{', '.join(VIDEO_EXTENSIONS)}) in folder {path}")
        if ignored:
            yield "ignored", ignored
        return
    if path.is_file():
        yield classify_file(path), path
        return
    if any(ch in str(p) for ch in _GLOB_CHARS):
        matches = [Path(m) for m in sorted(glob.glob(str(p), recursive=True)) if Path(m).is_file()]
        if not matches:
            raise MissingInputError(f"no files match {p}")
        yield from ((classify_file(m), m) for m in matches)
        return
    if top:
        raise MissingInputError(f"no such file, folder or glob match: {p}")
    yield "file", path  # a missing file in a list: reported (or skipped) with its name


def _units(source, spec: InputSpec, top: bool) -> Iterator[tuple[str, object]]:
    """Flatten ``source`` into ("batch", (N, C, H, W) tensor) | ("file"|"video"|"pil"|"image", obj)."""
    if is_array(source):
        if source.ndim == 4:
            yield "batch", as_nchw(source, spec.shape)
        elif source.ndim == 3 and not top:
            yield "image", source
        else:
            raise UsageError(f"expected images as a batch (N, C, H, W), got an array of shape {tuple(source.shape)}"
                             + ("; for one image add a batch axis: x[None]" if source.ndim == 3 else ""))
    elif isinstance(source, Image.Image):
        yield "pil", source
    elif isinstance(source, (str, os.PathLike)):
        yield from iter_expand_path(source, top)
    elif top and hasattr(source, "__iter__") and not isinstance(source, (bytes, dict)):
        for item in source:
            yield from _units(item, spec, top=False)
    else:
        raise UsageTypeError(f"cannot predict on a {type(source).__name__}: pass a tensor/array of images, PIL "
                        "images, file paths, a folder, a glob, a video file, or an iterable of these")


def _ignored_job(files: list[str]) -> Callable[[], Chunk]:
    def run() -> Chunk:
        return Chunk(None, [], [], [], ignored=list(files))
    run.inline = True
    return run


def _shifted(job: Callable[[], Chunk], offset: int) -> Callable[[], Chunk]:
    """A job of a video decoded ahead (positions from 0) with its positions moved to ``offset``."""
    def run() -> Chunk:
        c = job()
        c.indices = range(c.indices.start + offset, c.indices.stop + offset) if isinstance(c.indices, range) \
            else [i + offset for i in c.indices]
        c.skipped = [SkippedInput(s.index + offset, s.source, s.reason) for s in c.skipped]
        c.incomplete = [SkippedInput(s.index + offset, s.source, s.reason) for s in c.incomplete]
        if c.stream is not None:  # the video's own fold stream is its first position, as in order
            c.stream += offset
        return c
    return run


def _memory_jobs(kind: str, obj, pos: int, spec: InputSpec) -> Iterator[tuple[Callable[[], Chunk], int]]:
    """Jobs of an in-memory batch or an array file (.npy / .safetensors / Parquet / Arrow: no
    decoding, views where possible), each with how many input positions it takes."""
    if kind == "batch":
        pieces = (obj[a:a + spec.chunk] for a in range(0, obj.shape[0], spec.chunk))
    else:
        pieces = (as_nchw(piece, spec.shape, f"images in {obj}") for piece in iter_array_file(obj, spec.chunk))
    for piece in pieces:
        yield _array_job(piece, pos, spec, None if kind == "batch" else str(obj)), piece.shape[0]
        pos += piece.shape[0]


def iter_jobs(source, spec: InputSpec, processes=None) -> Iterator[Callable[[], Chunk]]:
    """Decode jobs for ``source``, in input order; each job returns one :class:`Chunk`.

    Input positions (``Chunk.indices``) count every image, frame and skipped file from 0. With
    ``spec.videos_ahead`` > 0 the next videos of the input start decoding in background threads
    while the current one is consumed; with ``processes`` (a pool of decoding processes) long
    videos decode a key-frame segment per process (see :func:`_video_jobs`).
    """
    pos = 0
    per_job = files_per_job(processes)
    singles: list[tuple[str, object]] = []
    units = _units(source, spec, top=True)
    upcoming: deque = deque()  # units drawn ahead to find the next videos
    ahead: dict[int, Ahead] = {}  # id(unit) -> its video decoding in the background

    def flush():
        nonlocal pos, singles
        job, n = _singles_job(singles, pos, spec), len(singles)
        singles, pos = [], pos + n
        return job

    def start_videos(current) -> None:
        while len(upcoming) < spec.videos_ahead and (u := next(units, None)) is not None:
            upcoming.append(u)
        for u in [current, *upcoming][:spec.videos_ahead + 1]:
            if u[0] == "video" and id(u) not in ahead:
                ahead[id(u)] = Ahead(lambda path=u[1]: _video_jobs(path, 0, spec, processes))

    try:
        while upcoming or (unit := next(units, None)) is not None:
            if upcoming:
                unit = upcoming.popleft()
            kind, obj = unit
            if kind in ("file", "pil", "image"):
                singles.append((kind, obj))
                if len(singles) == per_job:
                    yield flush()
                continue
            if singles:
                yield flush()
            if kind == "ignored":
                yield _ignored_job(obj)
            else:
                if kind in ("batch", "arrays"):
                    jobs = _memory_jobs(kind, obj, pos, spec)
                elif spec.videos_ahead > 0:
                    start_videos(unit)
                    base = pos  # the video's jobs count its positions from 0
                    jobs = ((_shifted(job, base), n) for job, n in ahead.pop(id(unit)))
                else:
                    jobs = _video_jobs(obj, pos, spec, processes)
                for job, n in jobs:
                    yield job
                    pos += n
        if singles:
            yield flush()
    finally:
        for a in ahead.values():
            a.close()


def count_inputs(source, stride: int = 1, keyframes: bool = False) -> int | None:
    """How many images ``source`` will give (for a progress bar), or None when unknown (generators,
    videos whose container does not say how many frames they hold, key-frame passes). A video
    counts its container's frames, every ``stride``-th; one cut short gives fewer."""
    if is_array(source):
        return int(source.shape[0]) if source.ndim == 4 else None
    if isinstance(source, Image.Image):
        return 1
    if isinstance(source, (str, os.PathLike)):
        try:
            units = expand_path(source, top=True)
        except FileNotFoundError:
            return None
        counts = [_count_unit(k, obj, stride, keyframes) for k, obj in units if k != "ignored"]
        return None if None in counts else sum(counts)
    if isinstance(source, (list, tuple)):
        total = 0
        for item in source:
            if is_array(item) and item.ndim == 4:
                n = int(item.shape[0])
            elif isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
                n = count_inputs(item, stride, keyframes)
            elif isinstance(item, (str, os.PathLike)) and (is_video(Path(item)) or is_array_file(Path(item))):
                n = _count_unit("video" if is_video(Path(item)) else "arrays", Path(item), stride, keyframes)
            else:
                n = 1
            if n is None:
                return None
            total += n
        return total
    return None


def _count_unit(kind: str, obj, stride: int, keyframes: bool) -> int | None:
    if kind == "arrays":
        return count_array_file(obj)
    if kind == "video":
        if keyframes:
            return None
        from foldcnn.data.readers import declared_frames

        n = declared_frames(obj)
        return -(-n // stride) if n else None
    return 1
