"""Read your own data: an image folder (one subdirectory per class) or the frames of a video.

Training readers return an :class:`~foldcnn.data.base.ArrayDataset` (uint8 (N, 3, H, W) images,
int64 labels). The inference side has no labels, so it gets plain uint8 (3, H, W) tensors from
:func:`read_image`, :func:`iter_images`, :func:`load_images` and :func:`iter_video_frames`.

Nothing is dropped silently: a file that cannot be read is either raised (``on_error="raise"``)
or skipped and listed with its reason in a :class:`ReadReport` (``meta["read_report"]``).
Sizes are ``input_size=(H, W)``, the order of a model's input shape (C, H, W).
"""

from __future__ import annotations

import csv
import json
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from foldcnn.background import Ahead
from foldcnn.data.frames import FrameConverter
from foldcnn.data.resize import resize_rgb
from foldcnn.errors import FoldcnnError, MissingExtraError, MissingInputError, UsageError
from foldcnn.progress import progress_bar

if TYPE_CHECKING:  # torch is imported by the functions that return tensors, not by this module
    import torch

    from foldcnn.data.base import ArrayDataset

__all__ = [
    "IMAGE_EXTENSIONS", "DataReadError", "ImageReadError", "VideoReadError", "LabelsMismatchError",
    "VideoTruncatedError", "SkippedFile", "ReadReport", "read_image", "list_images", "iter_images", "load_images",
    "load_image_folder", "image_size_counts", "iter_video_frames", "iter_video_arrays", "iter_video_batches",
    "iter_container_batches", "open_video_input", "declared_frames", "read_labels_csv", "load_video", "resize_rgb",
    "to_rgb", "decode_rgb", "decode_png_fast", "fast_png_available", "iter_folder",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
RESIZE_MODES = ("bilinear", "nearest")
VIDEO_CLASSES = ("absent", "present")


class DataReadError(FoldcnnError, ValueError):
    """Data that cannot be used as given; the message says which file and what to do."""


class ImageReadError(DataReadError):
    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path, self.reason = str(path), reason


class VideoReadError(DataReadError):
    """A video that cannot be opened or decoded to its end; ``frames_read`` frames came before the failure."""

    def __init__(self, message: str, frames_read: int = 0):
        super().__init__(message)
        self.frames_read = frames_read


class VideoTruncatedError(VideoReadError):
    """A video whose decoded frames fall short of the count its container declares (a cut file)."""


class LabelsMismatchError(DataReadError):
    pass


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass
class ReadReport:
    """What a reader did: images read, files skipped (with reasons), non-image files ignored."""

    read: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def skip(self, path: str | Path, reason: str) -> None:
        self.skipped.append(SkippedFile(str(path), reason))

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def summary(self, limit: int = 5) -> str:
        s = f"read {self.read} images, skipped {self.n_skipped}"
        if self.skipped:
            s += ": " + "; ".join(f"{f.path} ({f.reason})" for f in self.skipped[:limit])
            s += f"; ... {self.n_skipped - limit} more" if self.n_skipped > limit else ""
        if self.ignored:
            s += f"; ignored {len(self.ignored)} non-image files"
        return s

    def to_dict(self) -> dict:
        return {"read": self.read, "n_skipped": self.n_skipped,
                "skipped": [{"path": f.path, "reason": f.reason} for f in self.skipped],
                "ignored": list(self.ignored)}


# ------------------------------------------------------------------------------------ images
def _check_size(input_size) -> tuple[int, int] | None:
    if input_size is None:
        return None
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise UsageError(f"input_size must be (H, W), got {input_size!r}") from None
    if h < 1 or w < 1:
        raise UsageError(f"input_size must be positive (H, W), got {input_size!r}")
    return h, w


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 (H, W, 3). 16-bit grey is scaled to 8 bits; alpha is dropped.

    Floating-point grey (mode "F", e.g. a float32 TIFF) is read as [0, 1], the range of foldcnn's
    float images, and scaled to 0-255; values outside [0, 1] raise :class:`DataReadError` (Pillow
    would clip them to black or white without a word)."""
    if im.mode == "F":
        grey = np.asarray(im, dtype=np.float64)
        lo, hi = (float(grey.min()), float(grey.max())) if grey.size else (0.0, 0.0)
        if not (np.isfinite(grey).all() and 0.0 <= lo and hi <= 1.0):
            raise DataReadError(f"a float image with values in [{lo:g}, {hi:g}]; foldcnn reads float images as "
                                "[0, 1]: rescale it to [0, 1] or save it as 8-bit")
        grey = (grey * 255.0).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = (np.asarray(im, dtype=np.float64) / 257.0).clip(0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR, _CHUNK, _CRC = struct.Struct(">IIBB"), struct.Struct(">I4s"), struct.Struct(">I")
_spng = None  # pyspng, once imported; False where it is not installed


def _pyspng():
    global _spng
    if _spng is None:
        try:
            import pyspng

            _spng = pyspng
        except ImportError:
            _spng = False
    return _spng


def fast_png_available() -> bool:
    """Whether 8-bit RGB PNGs are decoded by libspng (the ``png`` extra) rather than Pillow."""
    return bool(_pyspng())


def decode_png_fast(data: bytes, limit: int | None) -> np.ndarray | None:
    """An 8-bit RGB PNG -> uint8 (h, w, 3) by libspng (the ``png`` extra, pyspng), or None where
    Pillow must decide: pyspng missing, another colour type or bit depth, an eXIf or tRNS chunk, a
    chunk whose CRC does not match (libspng as pyspng sets it up ignores CRCs; Pillow refuses such
    files), over ``limit`` pixels, or anything libspng cannot decode. Same pixels as Pillow (tested);
    a 22x52 crop, file read included, in about half of Pillow's time (docs/benchmarks.md)."""
    spng = _pyspng()
    if not spng or len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = _IHDR.unpack_from(data, 16)
    pixels, hard = width * height, Image.MAX_IMAGE_PIXELS  # Pillow refuses over 2x its limit
    if depth != 8 or colour != 2 or (limit is not None and pixels > limit) or (hard and pixels > 2 * hard):
        return None
    view, pos, end = memoryview(data), 8, len(data)
    while pos + 12 <= end:  # every chunk: length, type, data, CRC over type and data
        length, kind = _CHUNK.unpack_from(data, pos)
        stop = pos + 8 + length
        if stop + 4 > end or kind in (b"eXIf", b"tRNS"):
            return None
        if zlib.crc32(view[pos + 4:stop]) != _CRC.unpack_from(data, stop)[0]:
            return None
        pos = stop + 4
        if kind == b"IEND":
            break
    else:
        return None  # no IEND: truncated
    try:
        arr = spng.load(data)
    except Exception:  # noqa: BLE001 - Pillow reads it again and names the problem
        return None
    return arr if arr.shape == (height, width, 3) and arr.dtype == np.uint8 else None


def _decode(path: Path, max_pixels: int | None) -> tuple[np.ndarray, str]:
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if path.suffix.lower() == ".png" and _pyspng():
        try:
            data = path.read_bytes()
        except OSError:
            data = b""  # Pillow opens it again and names the problem
        arr = decode_png_fast(data, limit)
        if arr is not None:
            return arr, "RGB"
    try:
        with warnings.catch_warnings():
            # We apply our own limit below; Pillow's warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if limit is not None and w * h > limit:
                    raise ImageReadError(path, (
                        f"{w}x{h} = {w * h:,} pixels is over the decompression-bomb limit of "
                        f"{limit:,} pixels; pass max_pixels=... if you trust this file"))
                im.load()  # decode now: truncated data fails here, not later
                mode = im.mode
                if im.format != "PNG" or "exif" in im.info:  # a PNG without an eXIf chunk has no orientation
                    ImageOps.exif_transpose(im, in_place=True)  # photos taken sideways
                return to_rgb(im), mode
    except ImageReadError:
        raise
    except DataReadError as e:  # pixels to_rgb cannot convert faithfully
        raise ImageReadError(path, str(e)) from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"decompression bomb: {e}") from None
    except Exception as e:  # noqa: BLE001 - corrupt files raise many types; each becomes a reason
        raise ImageReadError(path, f"{type(e).__name__}: {e}") from None


def decode_rgb(path: Path, max_pixels: int | None = None) -> tuple[np.ndarray, str]:
    """One image file -> (uint8 (h, w, 3) RGB at its own size, the file's Pillow mode); raises
    :class:`ImageReadError` naming the file. numpy only: what decoding processes call."""
    return _decode(Path(path), max_pixels)


def read_image(path: str | Path, input_size: tuple[int, int] | None = None, *, resize: str = "bilinear",
               max_pixels: int | None = None) -> torch.Tensor:
    """One image file -> uint8 (3, H, W) RGB, resized to ``input_size=(H, W)`` if given.

    ``max_pixels`` guards against decompression bombs (default: Pillow's
    ``Image.MAX_IMAGE_PIXELS``). Raises :class:`ImageReadError` naming the file and the reason.
    """
    size = _check_size(input_size)
    _check_choice("resize", resize, RESIZE_MODES)
    import torch

    arr, _ = _decode(Path(path), max_pixels)
    return torch.from_numpy(np.ascontiguousarray(resize_rgb(arr, size, resize).transpose(2, 0, 1)))


def _is_image(p: Path, extensions: Sequence[str]) -> bool:
    return p.suffix.lower() in extensions


def iter_folder(root: str | Path, recursive: bool = True) -> Iterator[Path]:
    """Files under ``root`` (symlinks to files too), in sorted path order, none hidden or in a
    hidden folder; symlinked folders are not entered. Lazy: each folder is listed when reached
    (sorted by name, then visited in that order, which is the order of sorting all paths by
    their components), so a consumer can start on the first files while later folders are still
    unlisted. ``os.scandir`` reads the file type from the listing: about 2 us a file where
    ``Path.rglob`` and ``is_file`` took 15-20."""

    def visit(folder: str) -> Iterator[Path]:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        for e in entries:
            if e.is_file():
                yield Path(e.path)
            elif recursive and e.is_dir(follow_symlinks=False):
                yield from visit(e.path)

    yield from visit(str(root))


def list_images(source: str | Path | Iterable[str | Path], *, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                recursive: bool = False, report: ReadReport | None = None) -> list[Path]:
    """Image files of a flat folder (sorted) or of an explicit list (order kept).

    Files in a folder without an image extension are ignored and listed in ``report.ignored``.
    """
    exts = tuple(e.lower() for e in extensions)
    if isinstance(source, (str, Path)):
        root = Path(source)
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise MissingInputError(f"no such file or folder: {root}")
        files = list(iter_folder(root, recursive))
        if report is not None:
            report.ignored += [str(p) for p in files if not _is_image(p, exts)]
        return [p for p in files if _is_image(p, exts)]
    return [Path(p) for p in source]


def iter_images(source, input_size: tuple[int, int] | None = None, *, on_error: str = "raise",
                report: ReadReport | None = None, resize: str = "bilinear",
                max_pixels: int | None = None) -> Iterator[tuple[Path, torch.Tensor]]:
    """Yield ``(path, uint8 (3, H, W))`` for a folder or list of images, for prediction.

    ``on_error="skip"`` skips unreadable files and records them in ``report``; without a
    report a warning lists them at the end.
    """
    import torch

    _check_choice("on_error", on_error, ("skip", "raise"))
    size = _check_size(input_size)
    _check_choice("resize", resize, RESIZE_MODES)
    rep = report if report is not None else ReadReport()
    for p in list_images(source, report=rep):
        try:
            arr, _ = _decode(p, max_pixels)
        except ImageReadError as e:
            if on_error == "raise":
                raise
            rep.skip(p, e.reason)
            continue
        rep.read += 1
        yield p, torch.from_numpy(np.ascontiguousarray(resize_rgb(arr, size, resize).transpose(2, 0, 1)))
    if report is None and rep.skipped:
        warnings.warn(f"iter_images: {rep.summary()}", stacklevel=2)


def load_images(source, input_size: tuple[int, int], *, on_error: str = "raise", resize: str = "bilinear",
                max_pixels: int | None = None) -> tuple[torch.Tensor, list[Path], ReadReport]:
    """All images of a folder or list -> ``(uint8 (N, 3, H, W), paths, report)`` for prediction."""
    import torch

    if _check_size(input_size) is None:
        raise UsageError("load_images needs input_size=(H, W) to stack images of any size")
    report = ReadReport()
    pairs = list(iter_images(source, input_size, on_error=on_error, report=report, resize=resize,
                             max_pixels=max_pixels))
    if not pairs:
        raise DataReadError(f"no readable images in {source}: {report.summary()}")
    return torch.stack([t for _, t in pairs]), [p for p, _ in pairs], report


def _class_files(root: Path, exts: tuple[str, ...], report: ReadReport,
                 classes: Sequence[str] | None) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise MissingInputError(f"image folder not found (or not a folder): {root}")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes):
            raise UsageError(f"classes has duplicates: {classes}")
        if extra := sorted(set(found) - set(classes)):
            raise DataReadError(f"{root} has class folders that are not in classes: {extra}")
        found = classes
    classes = found
    if not classes:
        loose = [p for p in iter_folder(root, False) if _is_image(p, exts)]
        hint = "it has no class subdirectories"
        if loose:
            hint = (f"it holds {len(loose)} images but no class subdirectories; for labelled data put "
                    f"each class in its own folder ({root}/CLASS/image.png); for unlabelled images use "
                    f"foldcnn.data.readers.load_images or iter_images")
        raise DataReadError(f"{root} is not an image folder: {hint}")
    files = {}
    for c in classes:
        listed = list(iter_folder(root / c, True)) if (root / c).is_dir() else []
        report.ignored += [str(p) for p in listed if not _is_image(p, exts)]
        files[c] = [p for p in listed if _is_image(p, exts)]
    return files


def image_size_counts(root: str | Path, *, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> dict[tuple[int, int], int]:
    """How many images of ``root/CLASS/**`` have each size (H, W), most common first; reads file
    headers only (unreadable files are left to the reader that decodes them)."""
    exts = tuple(e.lower() for e in extensions)
    counts: dict[tuple[int, int], int] = {}
    for d in sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")):
        for p in iter_folder(d, True):
            if not _is_image(p, exts):
                continue
            try:
                with Image.open(p) as im:
                    size = (im.height, im.width)
            except Exception:  # noqa: BLE001  decoded (and reported) later
                continue
            counts[size] = counts.get(size, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _read_files(todo, root: Path, size, resize: str, max_pixels, on_error: str, report: ReadReport):
    """Decode (label, path) pairs to RGB arrays of one size: (arrays, labels, relative paths, modes
    seen). Without ``size`` every image must have the first one's size."""
    arrays, labels, rel, modes = [], [], [], {}
    first: tuple[Path, tuple[int, int]] | None = None
    for label, p in todo:
        try:
            arr, mode = _decode(p, max_pixels)
        except ImageReadError as e:
            if on_error == "raise":
                raise
            report.skip(p.relative_to(root).as_posix(), e.reason)
            continue
        if size is None:
            if first is None:
                first = (p, arr.shape[:2])
            elif arr.shape[:2] != first[1]:
                (h0, w0), (h1, w1) = first[1], arr.shape[:2]
                raise DataReadError(
                    f"images differ in size: {first[0]} is {h0}x{w0} (HxW) but {p} is {h1}x{w1}; "
                    f"pass input_size=(H, W) (e.g. input_size=({h0}, {w0})) to resize them all")
        arrays.append(resize_rgb(arr, size, resize))
        labels.append(label)
        rel.append(p.relative_to(root).as_posix())
        modes[mode] = modes.get(mode, 0) + 1
        report.read += 1
    return arrays, labels, rel, modes


def load_image_folder(root: str | Path, input_size: tuple[int, int] | None = None, *,
                      extensions: Sequence[str] = IMAGE_EXTENSIONS, on_error: str = "skip",
                      max_pixels: int | None = None, resize: str = "bilinear",
                      allow_empty_classes: bool = False, classes: Sequence[str] | None = None,
                      progress: bool = False) -> ArrayDataset:
    """Read ``root/CLASS/**/image`` into an ArrayDataset: uint8 (N, 3, H, W), labels by class.

    Classes are the sorted subdirectory names, or ``classes`` in that order (label i is
    ``classes[i]``; a folder not in it is an error, a missing one counts as empty). Images are
    converted to RGB (grey, palette, RGBA, 16-bit and CMYK files too) and resized to
    ``input_size=(H, W)`` (``resize``: ``"bilinear"`` or ``"nearest"``); without ``input_size``
    all images must share one size.
    Unreadable files (corrupt, truncated, over ``max_pixels``) are skipped and listed in
    ``meta["read_report"]`` or, with ``on_error="raise"``, raised. A class folder without
    images is an error unless ``allow_empty_classes`` (then a warning in ``meta["warnings"]``).
    """
    _check_choice("on_error", on_error, ("skip", "raise"))
    _check_choice("resize", resize, RESIZE_MODES)
    size = _check_size(input_size)
    root = Path(root)
    exts = tuple(e.lower() for e in extensions)
    report = ReadReport()
    files = _class_files(root, exts, report, classes)
    warn: list[str] = []

    def empty_classes(what: str, names: list[str]) -> None:
        msg = f"class folders {what}: {', '.join(repr(str(root / n)) for n in names)}"
        if not allow_empty_classes:
            raise DataReadError(f"{msg}; add images, remove the folders, or pass allow_empty_classes=True"
                                + (f" ({report.summary()})" if report.skipped else ""))
        warn.append(msg)

    if not any(files.values()):
        raise DataReadError(f"no images under {root} (extensions {', '.join(exts)})")
    if empties := [c for c, fs in files.items() if not fs]:
        empty_classes(f"with no images (extensions {', '.join(exts)})", empties)

    todo = [(label, p) for label, c in enumerate(files) for p in files[c]]
    todo = progress_bar(todo, desc=f"reading {root.name}", unit="img", disable=not progress)
    arrays, labels, rel, modes = _read_files(todo, root, size, resize, max_pixels, on_error, report)
    if not arrays:
        raise DataReadError(f"no readable images under {root}: {report.summary()}")
    seen = set(labels)
    lost = [c for i, c in enumerate(files) if files[c] and i not in seen]
    if lost:
        empty_classes("whose every image failed to read", lost)
    import torch

    from foldcnn.data.base import ArrayDataset

    images = torch.from_numpy(np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2)))
    meta = {"source": "image_folder", "root": str(root), "input_size": list(images.shape[2:]),
            "resize": resize if size is not None else None, "files": rel, "modes": modes,
            "read_report": report.to_dict(), "warnings": warn}
    return ArrayDataset(images, torch.tensor(labels, dtype=torch.int64), list(files), meta)


# ------------------------------------------------------------------------------------- video
def _import_av():
    try:
        import av
    except ImportError:
        raise MissingExtraError("reading video needs PyAV: pip install 'foldcnn[video]'") from None
    return av


def iter_video_frames(path: str | Path, input_size: tuple[int, int] | None = (50, 50), stride: int = 1,
                      resize: str = "nearest", *, keyframes: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
    """Decode a video and yield ``(frame_index, uint8 (3, H, W) RGB)`` for every ``stride``-th frame.

    Frames are counted from 0 in presentation order. The default 50x50 nearest-neighbour resize
    is what NoScope used (docs/design.md, "Data tasks and classes"); ``input_size=None`` keeps the native size. Raises
    :class:`VideoReadError` naming the file when it cannot be opened or decoded, after the frames
    decoded before the failure; :class:`VideoTruncatedError` when fewer frames decode than the
    container declares (a file cut short decodes "successfully" up to the cut).
    ``keyframes=True`` decodes only the key frames (the decoder skips the others: far faster,
    for a coarse pass) and yields every ``stride``-th of them, numbered by their timestamps.
    :func:`iter_video_batches` gives the same frames a batch at a time.
    """
    import torch

    for number, image in iter_video_arrays(path, input_size, stride, resize, keyframes=keyframes):
        yield number, torch.from_numpy(image)


def iter_video_arrays(path: str | Path, input_size: tuple[int, int] | None = (50, 50), stride: int = 1,
                      resize: str = "nearest", *, keyframes: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`iter_video_frames` with numpy frames: ``(frame_index, uint8 (3, H, W) array)``; no torch."""
    for numbers, images, _ in iter_video_batches(path, input_size, stride, resize, keyframes=keyframes):
        yield from zip(numbers, images)


def iter_video_batches(path: str | Path, input_size: tuple[int, int] | None = (50, 50), stride: int = 1,
                       resize: str = "nearest", *, keyframes: bool = False,
                       batch: int = 64) -> Iterator[tuple[list[int], np.ndarray, int]]:
    """:func:`iter_video_frames` a batch at a time: ``(frame numbers, uint8 (k, 3, H, W), frames
    decoded so far)``, k <= ``batch`` (a batch also ends where the native size changes when
    ``input_size`` is None). The frames decoded count includes the frames the stride skips; a
    last batch may be empty to report them. Errors as :func:`iter_video_frames`, raised after
    the batch of the frames decoded before them."""
    size = _check_size(input_size)
    _check_choice("resize", resize, RESIZE_MODES)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise UsageError(f"stride must be an int >= 1, got {stride!r}")
    path = Path(path)
    _, container = _open_video(path)
    yield from iter_container_batches(container, path, size, stride, resize, keyframes=keyframes, batch=batch)


def iter_container_batches(container, path, size: tuple[int, int] | None, stride: int, resize: str, *,
                           keyframes: bool = False, batch: int = 64,
                           converter=None) -> Iterator[tuple[list[int], np.ndarray, int]]:
    """:func:`iter_video_batches` on a container already open (a file, standard input or a
    network stream: see :func:`open_video_input`); closes it. ``path`` names the source in
    errors. Arguments already checked. ``converter`` (default a FrameConverter at ``size``)
    turns the frames into what each batch holds (e.g. foldcnn.data.frames.RegionCropper: the
    crops of a few boxes)."""
    av = _import_av()
    with container:
        stream = _video_stream(container, path)
        number = _frame_numbering(stream, path, keyframes)
        convert = converter if converter is not None else FrameConverter(size, resize, batch)
        numbers: list[int] = []
        index = reported = 0
        native = None
        frames = _decoded_frames(container, stream)

        def emit():
            nonlocal numbers, reported
            out, numbers, reported = (numbers, convert.take(), index), [], index
            return out

        try:
            for frame in frames:
                if index % stride == 0:
                    if size is None and numbers and (frame.height, frame.width) != native:
                        yield emit()
                    native = frame.height, frame.width
                    numbers.append(number(frame, index))
                    convert.add(frame)
                index += 1
                if len(numbers) == batch:
                    yield emit()
        except av.FFmpegError as e:
            if numbers:
                yield emit()
            what = f"after {index} key frames" if keyframes else f"at frame {index}"
            raise VideoReadError(f"cannot read video {path}: decoding failed {what}: {e}",
                                 frames_read=0 if keyframes else index) from None
        finally:
            frames.close(wait=True)
        if numbers or index > reported:
            yield emit()
        if index == 0:
            raise VideoReadError(f"cannot read video {path}: no {'key ' if keyframes else ''}frame could be decoded")
        declared = int(stream.frames or 0)  # 0: the container does not say (e.g. some MKV/WebM)
        if not keyframes and index < declared:
            raise VideoTruncatedError(
                f"video {path} is truncated: decoding stopped at frame {index} but its container "
                f"declares {declared} frames", frames_read=index)


def _frame_numbering(stream, path, keyframes: bool):
    """(frame, decoded index) -> the frame's number: the index, or in a key-frame pass (which makes
    the decoder skip the others) the number its time stamp gives."""
    if not keyframes:
        return lambda frame, index: index
    stream.codec_context.skip_frame = "NONKEY"
    rate = stream.average_rate or stream.guessed_rate
    if not rate or stream.time_base is None:
        raise VideoReadError(f"cannot number the key frames of {path}: it has no frame rate; decode every frame")
    start, time_base = stream.start_time or 0, stream.time_base
    return lambda frame, index: round(float((frame.pts - start) * time_base * rate)) if frame.pts is not None \
        else index


def declared_frames(path: str | Path) -> int | None:
    """The frame count a video's container declares (read from its header, nothing decoded), or
    None where it does not say or the file cannot be opened (decoding then reports why)."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            streams = container.streams.video
            if not streams:
                return None
            return int(streams[0].frames) or None
    except (av.FFmpegError, OSError):
        return None


LIVE_OPTIONS = {"probesize": "4096", "analyzeduration": "0"}


def open_video_input(source: str | os.PathLike):
    """(an open PyAV container, its name for messages) for a video file, ``"-"`` (a container
    stream on standard input, e.g. MPEG-TS or Matroska piped from ffmpeg) or a URL FFmpeg opens
    (``rtsp://``, ``http(s)://``, ``udp://``, ...); errors name the source."""
    text = str(source)
    if text != "-" and "://" not in text:
        return _open_video(Path(text))[1], Path(text)
    av = _import_av()
    name = "standard input" if text == "-" else text
    try:  # probe little: a live stream's first frames should not wait for seconds of stream to be read
        return av.open("pipe:0" if text == "-" else text, options=LIVE_OPTIONS), name
    except av.FFmpegError as e:
        raise VideoReadError(f"cannot read video from {name}: {e}") from None


def _open_video(path: Path):
    """(the av module, an open container) for a video file; errors name the file."""
    av = _import_av()
    if not path.is_file():
        raise MissingInputError(f"video not found: {path}")
    try:
        return av, av.open(str(path))
    except av.FFmpegError as e:
        raise VideoReadError(f"cannot read video {path}: {e}") from None


def _decoded_frames(container, stream) -> Ahead:
    """``container.decode(stream)`` drawn in a background thread, a few frames ahead, so FFmpeg
    decodes the next frames (it releases the GIL) while the caller converts this one: more
    frames/s than decoding and converting in one thread (docs/notebook/2026-12-07-end-to-end.md).
    Errors are raised at their place; ``close(wait=True)`` it before
    the container is closed."""
    return Ahead(lambda: container.decode(stream), depth=8, name="foldcnn-video-decode")


def _video_stream(container, path: Path):
    """The first video stream, decoded with FFmpeg's threads (frame and slice threading)."""
    if not container.streams.video:
        raise VideoReadError(f"cannot read video {path}: it has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def read_labels_csv(path: str | Path, classes: Sequence[str] = VIDEO_CLASSES) -> np.ndarray:
    """Per-frame labels from a CSV with header ``frame,label`` -> int64 (n_frames,).

    Every frame 0..n-1 must appear exactly once (any order); a label is a class index or a
    class name. Raises :class:`LabelsMismatchError` saying which row or frame is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"labels file not found: {path}")
    names = {c: i for i, c in enumerate(classes)}
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    if not rows:
        raise LabelsMismatchError(f"{path} is empty; expected a header 'frame,label' and one row per frame")
    header = [c.strip().lower() for c in rows[0]]
    if header != ["frame", "label"]:
        raise LabelsMismatchError(f"{path}: bad header {','.join(rows[0])!r}; expected 'frame,label'")
    by_frame: dict[int, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise LabelsMismatchError(f"{path} line {line}: expected 2 fields (frame,label), got {len(row)}")
        f_s, l_s = (c.strip() for c in row)
        try:
            frame = int(f_s)
        except ValueError:
            raise LabelsMismatchError(f"{path} line {line}: frame {f_s!r} is not an integer") from None
        if frame < 0:
            raise LabelsMismatchError(f"{path} line {line}: negative frame {frame}")
        if frame in by_frame:
            raise LabelsMismatchError(f"{path} line {line}: frame {frame} is labelled twice")
        if l_s in names:
            label = names[l_s]
        elif l_s.lstrip("-").isdigit() and 0 <= int(l_s) < len(classes):
            label = int(l_s)
        else:
            raise LabelsMismatchError(f"{path} line {line}: label {l_s!r} is neither a class index in "
                                      f"[0, {len(classes)}) nor one of {list(classes)}")
        by_frame[frame] = label
    n = max(by_frame, default=-1) + 1
    if n == 0:
        raise LabelsMismatchError(f"{path} has a header but no labels")
    if len(by_frame) != n:
        missing = sorted(set(range(n)) - set(by_frame))
        raise LabelsMismatchError(f"{path}: {len(missing)} of frames 0..{n - 1} "
                                  f"{'has' if len(missing) == 1 else 'have'} no label: {_few(missing)}")
    labels = np.empty(n, np.int64)
    labels[list(by_frame)] = list(by_frame.values())
    return labels


def _few(xs: Sequence[int], k: int = 5) -> str:
    return ", ".join(map(str, xs[:k])) + (", ..." if len(xs) > k else "")


def load_video(path: str | Path, input_size: tuple[int, int] | None = (50, 50), stride: int = 1,
               labels_csv: str | Path | None = None, *, classes: Sequence[str] = VIDEO_CLASSES,
               resize: str = "nearest", progress: bool = False) -> ArrayDataset:
    """Frames of a labelled video -> ArrayDataset (uint8 (N, 3, H, W), one label per kept frame).

    ``labels_csv`` defaults to ``labels.csv`` next to the video (what ``generate_video``
    writes). The CSV must label exactly the frames the video has; otherwise
    :class:`LabelsMismatchError` says what differs. Dataset item i is frame ``i * stride``.
    """
    path = Path(path)
    labels_path = Path(labels_csv) if labels_csv is not None else path.parent / "labels.csv"
    if labels_csv is None and not labels_path.is_file():
        raise MissingInputError(f"no labels for {path}: {labels_path} does not exist; pass labels_csv= "
                                "(header frame,label), or use iter_video_frames for unlabelled frames")
    labels = read_labels_csv(labels_path, classes)
    batches, index = [], []
    n_video = 0
    with progress_bar(total=len(labels), desc=f"decoding {path.name}", unit="frame", disable=not progress) as bar:
        for numbers, images, decoded in iter_video_batches(path, input_size, stride, resize):
            bar.update(decoded - n_video)
            n_video = decoded
            if numbers:
                batches.append(images)
                index.extend(numbers)
    import torch

    from foldcnn.data.base import ArrayDataset

    frames = torch.from_numpy(np.concatenate(batches))
    if n_video != len(labels):
        raise LabelsMismatchError(f"{labels_path} labels {len(labels)} frames (0..{len(labels) - 1}) but "
                                  f"{path} has {n_video} frames")
    meta = {"source": "video", "path": str(path), "labels_csv": str(labels_path), "n_video_frames": n_video,
            "frame_stride": stride, "input_size": list(frames.shape[2:]),
            "resize": resize if input_size is not None else None}
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        try:
            meta["video_manifest"] = json.loads(manifest.read_text())
        except (OSError, ValueError):
            pass  # a user's unrelated manifest.json: provenance is optional
    return ArrayDataset(frames, torch.from_numpy(labels[index]), list(classes), meta)

