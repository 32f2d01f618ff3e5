"""Check and decode the images of one request before any of them joins a fold.

Images come out as numpy uint8 (N, C, H, W) arrays: serving needs no torch.

Every check fails with a :class:`RequestError` that carries an HTTP status (4xx) and one sentence
saying what was wrong and what to send instead. Nothing here knows about the web framework: the
app turns bytes into ``list[bytes]`` and this module turns those into uint8 (N, C, H, W).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import warnings
from dataclasses import dataclass

import numpy as np

from foldcnn.errors import FoldcnnError, UsageError

__all__ = ["ImageLimits", "RequestError", "DEFAULT_FORMATS", "MAX_JSON_DEPTH", "check_image_count", "decode_image",
           "decode_images", "image_pixels", "split_json_images", "check_json_depth"]

# Pillow format names accepted by default: the lossless and lossy still-image formats in common use.
DEFAULT_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF", "PPM")
# {"images": [...]} nests 2 deep; far deeper JSON is an attack on the parser's recursion (a RecursionError).
MAX_JSON_DEPTH = 32


class RequestError(FoldcnnError, ValueError):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ImageLimits:
    """What one request may carry.

    max_image_bytes: encoded size of one image; max_body_bytes: the whole request body;
    max_pixels: decoded width * height of one image (decompression-bomb guard);
    max_images: images per request; resize: resize to the model input (False: reject other sizes).
    """

    max_image_bytes: int = 8 * 1024 * 1024
    max_body_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 16_000_000
    max_images: int = 1024
    resize: bool = True
    formats: tuple[str, ...] = DEFAULT_FORMATS

    def __post_init__(self):
        for name in ("max_image_bytes", "max_body_bytes", "max_pixels", "max_images"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"ImageLimits.{name} must be a positive int, got {v!r}")
        object.__setattr__(self, "formats", tuple(f.upper() for f in self.formats))


def _check_size(data: bytes, limits: ImageLimits, where: str) -> None:
    if not data:
        raise RequestError(400, f"{where} is empty; send the bytes of a PNG, JPEG, BMP or WebP file")
    if len(data) > limits.max_image_bytes:
        raise RequestError(413, f"{where} has {len(data):,} bytes, over the limit of "
                                f"{limits.max_image_bytes:,} bytes per image; send a smaller file")


@contextlib.contextmanager
def _opened(data: bytes, limits: ImageLimits, where: str):
    """The image, opened by an accepted decoder (header read, pixels not yet), after the byte and
    pixel limits; every failure inside the block becomes a RequestError with its 4xx status."""
    from PIL import Image, UnidentifiedImageError

    _check_size(data, limits, where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the accepted decoders ever see the bytes (less parser surface for hostile input).
            with Image.open(io.BytesIO(data), formats=list(limits.formats)) as im:
                iw, ih = im.size
                if iw * ih > limits.max_pixels:
                    raise RequestError(413, f"{where} is {iw}x{ih} = {iw * ih:,} pixels, over the limit of "
                                            f"{limits.max_pixels:,} pixels; send a smaller image")
                yield im
    except RequestError:
        raise
    except FoldcnnError as e:  # pixels to_rgb cannot convert faithfully (a float image outside [0, 1])
        raise RequestError(400, f"{where} is {e}") from None
    except UnidentifiedImageError:
        raise RequestError(415, f"{where} is not an image in an accepted format; send one of "
                                f"{', '.join(limits.formats)}") from None
    except Image.DecompressionBombError:
        raise RequestError(413, f"{where} is a decompression bomb (too many pixels); send a smaller image") from None
    except Exception as e:  # corrupt files raise many types; each becomes a 400 with its reason
        raise RequestError(400, f"{where} could not be decoded ({type(e).__name__}: {e}); "
                                f"send a complete, valid image file") from None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNGs up to this many pixels (512 x 512) decode by libspng, which holds the GIL meanwhile (a few ms).
FAST_PNG_PIXELS = 1 << 18


def image_pixels(data: bytes, limits: ImageLimits, where: str = "the image") -> int:
    """Width x height from the image's header alone (no pixel decoded), after the checks that need
    no decoding: bytes, format, pixel limit. What :class:`foldcnn.serve.decoding.DecodePool` charges.
    A PNG's size is read from its IHDR chunk (a tenth of Pillow's open); a broken rest fails at decoding."""
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24 and "PNG" in limits.formats:
        _check_size(data, limits, where)
        iw, ih = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if iw * ih > limits.max_pixels:
            raise RequestError(413, f"{where} is {iw}x{ih} = {iw * ih:,} pixels, over the limit of "
                                    f"{limits.max_pixels:,} pixels; send a smaller image")
        if iw and ih:
            return iw * ih
    with _opened(data, limits, where) as im:
        return im.size[0] * im.size[1]


def _png_pixels(data: bytes) -> int:
    """Width x height from a PNG's IHDR chunk; 0 when ``data`` does not start like a PNG."""
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
        return 0
    return int.from_bytes(data[16:20], "big") * int.from_bytes(data[20:24], "big")


def decode_image(data: bytes, input_shape: tuple[int, int, int], limits: ImageLimits,
                 where: str = "the image") -> np.ndarray:
    """Encoded image bytes -> uint8 (C, H, W) in the model's input shape (C = 3 RGB or 1 grey)."""
    from PIL import Image, ImageOps

    from foldcnn.data.readers import decode_png_fast, resize_rgb, to_rgb

    c, h, w = input_shape
    _check_size(data, limits, where)
    # Small 8-bit RGB PNGs by libspng where the png extra is installed (as for files: the same
    # pixels); every other image, and every problem, goes through Pillow below. libspng (pyspng)
    # holds the GIL for the whole decode (a tenth of a second or more for a 16-megapixel PNG,
    # docs/serving.md), which stops the event loop and every other client that long; Pillow
    # releases it while it decodes and resizes: a large image costs others a GIL switch interval.
    fast = "PNG" in limits.formats and 0 < _png_pixels(data) <= FAST_PNG_PIXELS
    arr = decode_png_fast(data, limits.max_pixels) if fast else None
    if arr is not None and not limits.resize and arr.shape[:2] != (h, w):
        arr = None  # Pillow's path names the size mismatch
    if arr is None:
        with _opened(data, limits, where) as im:
            iw, ih = im.size
            if not limits.resize and (ih, iw) != (h, w):
                raise RequestError(400, f"{where} is {iw}x{ih} (width x height) but the model takes "
                                        f"{w}x{h} and this server does not resize; resize it first")
            im.load()  # decode now: truncated data fails here
            ImageOps.exif_transpose(im, in_place=True)  # as foldcnn.data.readers does for files
            if im.mode == "RGB" and im.size != (w, h):
                # The same bilinear resize resize_rgb does, before the full-size numpy copies: a large
                # image costs its decode, not two more copies of its pixels (holding the GIL).
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = to_rgb(im)
    arr = resize_rgb(arr, (h, w), "bilinear")
    if c == 1:  # grey model: ITU-R 601 luma, the weights Pillow's convert("L") uses
        arr = (arr @ np.array([0.299, 0.587, 0.114]))[..., None].round().clip(0, 255).astype(np.uint8)
    elif c != 3:
        raise RequestError(500, f"the model takes {c}-channel images; the server decodes only 1 or 3 channels")
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def check_image_count(n: int, limits: ImageLimits) -> None:
    if not n:
        raise RequestError(400, "the request holds no images; send at least one")
    if n > limits.max_images:
        raise RequestError(413, f"the request holds {n} images, over the limit of "
                                f"{limits.max_images} per request; split it")


def decode_images(blobs: list[bytes], input_shape: tuple[int, int, int], limits: ImageLimits) -> np.ndarray:
    """Encoded images -> uint8 (N, C, H, W); the first bad image fails the whole request."""
    check_image_count(len(blobs), limits)
    where = (lambda i: "the image") if len(blobs) == 1 else (lambda i: f"image {i}")
    return np.stack([decode_image(b, input_shape, limits, where(i)) for i, b in enumerate(blobs)])


def split_json_images(body: bytes) -> list[bytes]:
    """``{"images": [base64, ...]}`` (plain base64 or data: URLs) -> the decoded image bytes.

    Nesting deeper than MAX_JSON_DEPTH is refused before parsing (brackets inside strings count
    too, which no valid body of this API comes near)."""
    check_json_depth(body)
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"the body is not valid JSON ({e.__class__.__name__}: {e})") from None
    except RecursionError:  # not reachable past the depth check; kept so a parser change stays a 400
        raise RequestError(400, 'the JSON body is nested too deeply; send {"images": ["<base64>", ...]}') from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list) or not all(isinstance(s, str) for s in images):
        raise RequestError(400, 'a JSON body must be {"images": ["<base64>", ...]} with one base64 string per image')
    out = []
    for i, s in enumerate(images):
        if s.startswith("data:"):  # data:image/png;base64,....
            s = s.partition(",")[2]
        s = "".join(s.split())  # base64 wrapped at 76 columns is common
        try:
            out.append(base64.b64decode(s, validate=True))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"images[{i}] is not valid base64; encode the file bytes with "
                                    f"standard base64") from None
    return out


def check_json_depth(body: bytes) -> None:
    """400 when brackets nest deeper than MAX_JSON_DEPTH (vectorized: a 64 MiB body in ~0.2 s)."""
    raw = np.frombuffer(body, dtype=np.uint8)
    step = (np.isin(raw, (ord("["), ord("{"))).astype(np.int32)
            - np.isin(raw, (ord("]"), ord("}"))).astype(np.int32))
    depth = int(np.cumsum(step).max()) if raw.size else 0
    if depth > MAX_JSON_DEPTH:
        raise RequestError(400, f"the JSON body nests {depth} levels deep, over the limit of {MAX_JSON_DEPTH}; "
                                f'send {{"images": ["<base64>", ...]}}')
