"""What runs inside Ray: the decoding tasks and the folded-inference actor.

Rows between the two stages are whole *folds*, so Ray may cut and merge batches anywhere
without changing which images share a fold:

    image      uint8 (f, C, H, W)  the f images of one fold (zeros in padded slots)
    source_id  int64 (f,)          file id of each slot (-1 when padded)
    frame      int64 (f,)          video frame index, -1 for images
    valid      bool  (f,)          False for padding
    error      str                 "" for a fold; the reason for a failure row (no valid slot)

The actor returns one row per image (and one per failed file): source_id, frame, class_index,
confidence, error. The driver turns ids into paths and class names.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["FoldedInference", "decode_units"]

Batch = dict[str, np.ndarray]


def _fold_rows(ids: list[int], frames: list[int], images: list[np.ndarray], fold: int,
               shape: tuple[int, int, int]) -> Batch:
    """n images (C, H, W) -> ceil(n/f) fold rows, the last one zero-padded."""
    n = len(images)
    rows = -(-n // fold)
    image = np.zeros((rows * fold, *shape), np.uint8)
    if n:
        image[:n] = np.stack(images)
    source_id = np.full(rows * fold, -1, np.int64)
    source_id[:n] = ids
    frame = np.full(rows * fold, -1, np.int64)
    frame[:n] = frames
    valid = np.zeros(rows * fold, bool)
    valid[:n] = True
    return {"image": image.reshape(rows, fold, *shape), "source_id": source_id.reshape(rows, fold),
            "frame": frame.reshape(rows, fold), "valid": valid.reshape(rows, fold),
            "error": np.array([""] * rows, dtype=object)}


def _failure_row(source_id: int, reason: str, fold: int, shape: tuple[int, int, int]) -> Batch:
    ids = np.full((1, fold), -1, np.int64)
    ids[0, 0] = source_id
    return {"image": np.zeros((1, fold, *shape), np.uint8), "source_id": ids,
            "frame": np.full((1, fold), -1, np.int64), "valid": np.zeros((1, fold), bool),
            "error": np.array([reason or "unknown error"], dtype=object)}


def _image_group(ids, paths, fold, spec, on_error) -> Iterator[Batch]:
    from foldcnn.data.readers import DataReadError
    from foldcnn.infer.sources import load_image_file

    ok_ids, images = [], []
    for i, p in zip(ids, paths):
        try:
            images.append(load_image_file(p, spec)[0])
            ok_ids.append(int(i))
        except DataReadError as e:
            if on_error == "raise":
                raise
            yield _failure_row(int(i), getattr(e, "reason", str(e)), fold, spec.shape)
    if images:
        yield _fold_rows(ok_ids, [-1] * len(images), images, fold, spec.shape)


def _video(source_id, path, fold, spec, chunk, on_error) -> Iterator[Batch]:
    """Frames in order, emitted every ``chunk`` frames (a multiple of f) to bound memory."""
    from foldcnn.infer.sources import iter_video

    shape = spec.shape
    frames, images = [], []
    decoded = iter_video(path, spec)
    while True:
        try:
            t, img = next(decoded)
        except StopIteration:
            break
        except ImportError:
            raise
        except Exception as e:  # PyAV and FFmpeg raise many types; each becomes a reason
            if on_error == "raise":
                raise
            if images:  # frames decoded before the error are kept and predicted
                yield _fold_rows([source_id] * len(images), frames, images, fold, shape)
            reason = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            yield _failure_row(source_id, reason, fold, shape)
            return
        frames.append(t)
        images.append(img)
        if len(images) == chunk:
            yield _fold_rows([source_id] * chunk, frames, images, fold, shape)
            frames, images = [], []
    if images:
        yield _fold_rows([source_id] * len(images), frames, images, fold, shape)


def decode_units(batch: Batch, *, fold: int, input_shape: tuple[int, int, int], stride: int,
                 chunk: int, on_error: str, resize: bool = True, resize_mode: str | None = None,
                 max_pixels: int | None = None) -> Iterator[Batch]:
    """Ray map_batches function (a read task): units -> fold rows (see the module docstring).

    Decoding is the Predictor's (foldcnn.infer.sources.load_image_file / iter_video with the
    same resize, resize_mode, max_pixels and stride), so a file gives the same pixels here.
    """
    from foldcnn.data.readers import DataReadError
    from foldcnn.infer.sources import InputSpec

    spec = InputSpec(tuple(int(v) for v in input_shape), resize, resize_mode, on_error, stride, max_pixels)
    for kind, ids, paths in zip(batch["kind"], batch["ids"], batch["paths"]):
        ids, paths = [int(i) for i in ids], [str(p) for p in paths]
        try:
            if kind == "video":
                yield from _video(ids[0], paths[0], fold, spec, chunk, on_error)
            else:
                yield from _image_group(ids, paths, fold, spec, on_error)
        except (DataReadError, OSError) as e:
            # on_error="raise". A plain one-argument DataReadError: Ray must rebuild it on the
            # driver, and ImageReadError's (path, reason) constructor cannot be rebuilt from args.
            raise DataReadError(str(e)) from None


def _load_predictor(checkpoint: str, options):
    from foldcnn.infer import Predictor

    # workers=0: the images arrive decoded; no decoding threads are needed in the actor. The
    # fold rows arrive padded already (partial "pad" per group), so the Predictor never pads.
    return Predictor.from_checkpoint(checkpoint, options.replace(workers=0, partial=None, fallback=None))


class FoldedInference:
    """Ray actor (a callable class for ``map_batches``): loads the Predictor once, then turns
    fold rows (R, f, C, H, W) into per-image predictions with ``Predictor.predict_arrays``."""

    def __init__(self, checkpoint: str, options):
        self.predictor = _load_predictor(checkpoint, options)
        self.fold = self.predictor.fold

    def __call__(self, batch: Batch) -> Batch:
        import torch

        failed = batch["error"] != ""
        folds = ~failed
        image = batch["image"][folds]
        rows, f = image.shape[:2]
        if f != self.fold:
            raise RuntimeError(f"fold rows of {f} images reached a model with fold={self.fold}")
        images = torch.from_numpy(np.ascontiguousarray(image.reshape(rows * f, *image.shape[2:])))
        class_index, probs = self.predictor.predict_arrays(images)
        valid = batch["valid"][folds].reshape(-1)
        confidence = probs[np.arange(len(class_index)), class_index]
        n_failed = int(failed.sum())
        return {
            "source_id": np.concatenate([batch["source_id"][folds].reshape(-1)[valid],
                                         batch["source_id"][failed][:, 0]]),
            "frame": np.concatenate([batch["frame"][folds].reshape(-1)[valid], np.full(n_failed, -1)]),
            "class_index": np.concatenate([class_index[valid], np.full(n_failed, -1)]).astype(np.int64),
            "confidence": np.concatenate([confidence[valid], np.full(n_failed, np.nan)]).astype(np.float32),
            "error": np.concatenate([np.array([""] * int(valid.sum()), dtype=object),
                                     batch["error"][failed].astype(object)]),
        }
