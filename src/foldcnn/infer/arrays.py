"""Image arrays: layout detection, dtype and range checks, resizing, uint8 -> float32.

Used by the decode worker threads, so everything computes with numpy: a torch op there
starts its own OpenMP team per thread and fights the model's threads for the cores. Images
travel as numpy arrays from here on; a torch tensor given by the caller is read as one (torch
is never imported here: a tensor can only come from a caller that imported it).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from foldcnn.data.readers import DataReadError, resize_rgb
from foldcnn.errors import UsageError, UsageTypeError
from foldcnn.tensors import is_array, is_tensor, tensor_to_numpy

__all__ = ["ImageSizeError", "as_nchw", "fit_images", "is_array", "is_tensor", "resize_images", "tensor_to_numpy",
           "to_unit_float"]


class ImageSizeError(DataReadError):
    """An image of another size than the model's, with ``resize=False``."""

    def __init__(self, what: str, got: tuple[int, int], want: tuple[int, int]):
        self.reason = (f"it is {got[0]}x{got[1]} (HxW) but the model expects {want[0]}x{want[1]}; "
                       f"pass resize=True (in the CLI: drop --no-resize) to resize it")
        super().__init__(f"{what}: {self.reason}")


def as_nchw(x, shape: tuple[int, int, int], what: str = "images") -> np.ndarray:
    """A 4-D array / tensor -> a (N, C, H, W) numpy view (no copy, no dtype change)."""
    c, h, w = shape
    if isinstance(x, np.ndarray):
        if x.ndim != 4:
            raise UsageError(f"{what}: expected a batch (N, C, H, W) or (N, H, W, C), got shape {x.shape}")
        layouts = [lay for lay, ch in (("NCHW", x.shape[1]), ("NHWC", x.shape[3])) if ch == c]
        if len(layouts) == 2:
            fits = [lay for lay, hw in (("NCHW", x.shape[2:4]), ("NHWC", x.shape[1:3])) if tuple(hw) == (h, w)]
            if len(fits) != 1:
                raise UsageError(f"{what}: cannot tell whether an array of shape {x.shape} is (N, C, H, W) or "
                                 f"(N, H, W, C); transpose it to (N, {c}, H, W) and pass a torch tensor")
            layouts = fits
        if not layouts:
            raise UsageError(f"{what}: an array of shape {x.shape} has neither {c} channels on axis 1 (N, C, H, W) "
                             f"nor on axis 3 (N, H, W, C); the model takes {c}-channel images")
        _check_dtype(x.dtype, what)
        return x.transpose(0, 3, 1, 2) if layouts[0] == "NHWC" else x
    if not is_tensor(x):
        raise UsageTypeError(f"{what}: expected a torch tensor or numpy array, got {type(x).__name__}")
    if x.dim() != 4:
        raise UsageError(f"{what}: expected a batch (N, {c}, H, W), got shape {tuple(x.shape)}; "
                         f"for one image (C, H, W) add a batch axis: x[None]")
    if x.shape[1] != c:
        hint = " (it looks like (N, H, W, C): use x.permute(0, 3, 1, 2))" if x.shape[3] == c else ""
        raise UsageError(f"{what}: images have {x.shape[1]} channels but the model takes {c}: "
                         f"expected (N, {c}, H, W), got {tuple(x.shape)}{hint}")
    if x.is_complex() or not (x.is_floating_point() or str(x.dtype) == "torch.uint8"):
        raise UsageTypeError(f"{what}: images must be uint8 (0-255) or float in [0, 1], got {x.dtype}")
    return tensor_to_numpy(x)


def _check_dtype(dtype, what: str) -> None:
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise UsageTypeError(f"{what}: images must be uint8 (0-255) or float in [0, 1], got {dtype}")


def to_unit_float(a: np.ndarray) -> np.ndarray:
    """uint8 -> float32 ``a / 255`` (IEEE division: bit-identical to torch's ``x.float() / 255``);
    float32 passes through. numpy, single-threaded: safe and cheap in decode worker threads."""
    if a.dtype != np.uint8:
        return a
    out = a.astype(np.float32)
    np.divide(out, np.float32(255), out=out)
    return out


def _resize_np(a: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """(n, C, h, w) uint8 or float32 -> (n, C, H, W) with Pillow."""
    h, w = size
    filt = Image.Resampling.BILINEAR if mode == "bilinear" else Image.Resampling.NEAREST
    out = np.empty((a.shape[0], a.shape[1], h, w), a.dtype)
    for i, img in enumerate(a):
        if img.dtype == np.uint8 and img.shape[0] == 3:  # the exact path read_image takes
            out[i] = resize_rgb(np.ascontiguousarray(img.transpose(1, 2, 0)), size, mode).transpose(2, 0, 1)
        else:  # grey / other channel counts, or float: each channel as an "L" or "F" image
            out[i] = [np.asarray(Image.fromarray(np.ascontiguousarray(ch)).resize((w, h), filt)) for ch in img]
    return out


def resize_images(x, size: tuple[int, int], mode: str = "bilinear"):
    """(n, C, h, w) uint8 or float32 -> (n, C, H, W) with Pillow (identical to reading the file
    resized); a numpy array or a torch tensor, the same kind back."""
    if is_tensor(x):
        import torch

        return torch.from_numpy(_resize_np(tensor_to_numpy(x), size, mode))
    return _resize_np(np.asarray(x), size, mode)


def fit_images(x: np.ndarray, shape: tuple[int, int, int], resize: bool, resize_mode: str | None,
               what: str, contiguous: bool = True) -> np.ndarray:
    """(n, C, h, w) uint8/float -> C-contiguous (n, C, H, W) uint8 or float32 in [0, 1] at the
    (H, W) of ``shape``; other sizes are resized (``resize``) or an :class:`ImageSizeError`.
    ``contiguous=False`` keeps a strided view (e.g. of an (N, H, W, C) array) where no resize was
    needed: the batch assembly reads it in its one scaling pass, no transposed copy first."""
    a = tensor_to_numpy(x) if is_tensor(x) else x
    if a.dtype != np.uint8:
        a = a.astype(np.float32, copy=False)
        if a.size:
            lo, hi = a.min(), a.max()
            if not (lo >= 0 and hi <= 1):  # also catches NaN
                raise UsageError(f"{what}: float images must be in [0, 1], got values in [{float(lo):.3g}, "
                                 f"{float(hi):.3g}]; divide 0-255 data by 255 or pass uint8")
    want = tuple(shape[1:])
    if tuple(a.shape[2:]) != want:
        if not resize:
            raise ImageSizeError(what, tuple(a.shape[2:]), want)
        a = _resize_np(a, want, resize_mode or "bilinear")
    return np.ascontiguousarray(a) if contiguous else a
