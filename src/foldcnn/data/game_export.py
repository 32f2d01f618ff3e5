"""Write synthetic game text to disk (class-per-directory PNGs + manifest) and draw sample grids.

Layout written by ``write_game_text``::

    DIR/manifest.json
    DIR/train/<class>/000000.png ...   (likewise val/, test/; index = position in the split)

Each split is ``game_text_arrays(task, n, split_seed(seed, split))``, so a split can be rebuilt in
memory and compared with the files; these are the seeds ``foldcnn train --task`` uses too.
Output is byte-identical for the same arguments: PNGs are written with fixed options and no
timestamps, chunks are seeded independently (the worker count does not change a byte), and the
manifest holds no time or host.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFont

from foldcnn.data.game_text import (
    CHUNK,
    check_other_share,
    game_task,
    game_text_arrays,
    game_text_chunk,
    generator_meta,
)
from foldcnn.data.splits import SPLIT_NAMES as SPLITS
from foldcnn.data.splits import split_seed
from foldcnn.errors import OutputExistsError, UsageError

PNG_OPTIONS = {"format": "PNG", "compress_level": 6, "optimize": False}
MANIFEST = "manifest.json"
DATA_SHA256_METHOD = (
    "sha256 of the sha256sum listing ('<file sha256>  <path>\\n') of every data file, sorted by "
    "path; in DIR: find train val test -type f | LC_ALL=C sort | xargs sha256sum | sha256sum"
)


def _png_bytes(image_chw: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_chw.transpose(1, 2, 0))).save(buf, **PNG_OPTIONS)
    return buf.getvalue()


def _write_chunk(task: str, split: str, n: int, seed: int, chunk: int, root: str,
                 digits: int, other_share: float | None = None) -> list[tuple[str, str, int]]:
    """Generate one chunk of a split and write it; returns (relative path, sha256, label)."""
    classes = game_task(task).classes
    images, labels = game_text_chunk(task, n, seed, chunk, other_share)
    out = []
    for j, (img, lab) in enumerate(zip(images, labels.tolist())):
        rel = f"{split}/{classes[lab]}/{chunk * CHUNK + j:0{digits}d}.png"
        data = _png_bytes(img)
        with open(os.path.join(root, rel), "wb") as fh:
            fh.write(data)
        out.append((rel, hashlib.sha256(data).hexdigest(), lab))
    return out


def _prepare(root: str, classes, overwrite: bool) -> None:
    if os.path.isdir(root) and os.listdir(root):
        if not overwrite:
            raise OutputExistsError(f"{root} is not empty; choose an empty directory or overwrite it")
        for name in SPLITS:  # only what this writer owns: never other files in the directory
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        if os.path.exists(os.path.join(root, MANIFEST)):
            os.remove(os.path.join(root, MANIFEST))
    for split in SPLITS:
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)


def write_game_text(task: str, root: str, counts: dict[str, int], seed: int = 0, *,
                    workers: int = 1, overwrite: bool = False, command: str | None = None,
                    progress: Callable[[int], None] | None = None, other_share: float | None = None) -> dict:
    """Write ``counts`` = {"train": n, "val": n, "test": n} images of ``task`` under ``root``
    and ``root/manifest.json``; returns the manifest. ``progress(k)`` after every k images;
    ``other_share``: the share of 'other' images in every split (None: balanced classes)."""
    spec = game_task(task)
    check_other_share(other_share)
    unknown = set(counts) - set(SPLITS)
    if unknown or any(int(v) < 0 for v in counts.values()):
        raise UsageError(f"counts must map {SPLITS} to counts >= 0, got {counts}")
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    _prepare(root, spec.classes, overwrite)
    counts = {s: int(counts.get(s, 0)) for s in SPLITS}
    digits = max(6, len(str(max(counts.values()) - 1)))
    jobs = [(task, s, n, split_seed(seed, s), c, root, digits, other_share)
            for s, n in counts.items() for c in range(-(-n // CHUNK))]
    records: list[tuple[str, str, int]] = []
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            rec = _write_chunk(*job)
            records += rec
            if progress:
                progress(len(rec))
    else:
        # spawn: a clean interpreter per worker (forking a process with torch loaded can hang)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for rec in pool.map(_write_chunk, *zip(*jobs)):
                records += rec
                if progress:
                    progress(len(rec))

    listing = "".join(f"{h}  {rel}\n" for rel, h, _ in sorted(records))
    per_split = {}
    for s in SPLITS:
        labs = np.array([lab for rel, _, lab in records if rel.startswith(s + "/")], np.int64)
        per_class = np.bincount(labs, minlength=spec.num_classes).tolist()
        per_split[s] = {"seed": split_seed(seed, s), "count": counts[s],
                        "class_counts": dict(zip(spec.classes, per_class))}
    from foldcnn import __version__

    manifest = {
        **generator_meta(task, seed, fonts_detail=True, other_share=other_share),
        "foldcnn_version": __version__,
        "pillow_version": PIL.__version__,
        "numpy_version": np.__version__,
        "classes": list(spec.classes),
        "layout": "<split>/<class>/<index>.png, index zero-padded, RGB PNG",
        "splits": per_split,
        "files": len(records),
        "data_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "data_sha256_method": DATA_SHA256_METHOD,
        "command": command,
    }
    with open(os.path.join(root, MANIFEST), "w", encoding="utf-8") as fh:
        fh.write(json.dumps(manifest, indent=2) + "\n")
    return manifest


def game_text_grid(task: str, rows: int = 4, cols: int = 8, seed: int = 0, scale: int = 3,
                   captions: bool = True) -> Image.Image:
    """A rows x cols sheet of samples, upscaled ``scale``x (nearest), each captioned with its class."""
    spec = game_task(task)
    images, labels = game_text_arrays(task, rows * cols, seed)
    h, w = (s * scale for s in spec.size)
    cap = 14 if captions else 0
    gap = 4
    sheet = Image.new("RGB", (cols * (w + gap) + gap, rows * (h + cap + gap) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(12)
    for i, (img, lab) in enumerate(zip(images, labels.tolist())):
        r, c = divmod(i, cols)
        x, y = gap + c * (w + gap), gap + r * (h + cap + gap)
        tile = Image.fromarray(img.transpose(1, 2, 0)).resize((w, h), Image.NEAREST)
        sheet.paste(tile, (x, y))
        if captions:
            draw.text((x + w // 2, y + h + 1), spec.classes[lab], fill=(0, 0, 0), font=font, anchor="mt")
    return sheet
