"""Synthetic game-screen text for the paper's six game tasks (docs/design.md, "Data tasks and classes").

    ds = GameTextDataset("lol-gold-fraction", 10_000, seed=0)   # uint8 (N, 3, 22, 52)

Each image is one crop of a HUD readout ("67.8k", "07:42", "14 SQUADS LEFT", "1,234", ...) whose
classified field is fully visible; the font face and size, letter spacing, position (other
fields may be clipped by the crop edge), background, colours, outline or shadow, blur, noise and
JPEG artefacts are random. The ``other`` class holds crops with no valid readout: empty panels,
placeholders ("--:--"), unrelated words, garbled text, readouts whose classified field is cut by
the crop edge, and values outside the class list. Classes are balanced (counts differ by at most
one) and the output is a pure function of (task, n, seed) and GENERATOR_VERSION. ``other_share``
gives ``other`` that share of the images instead (the readout classes stay balanced among
themselves): with many classes a balanced ``other`` is rare (1 image in 111 for lol-gold-int) while
it has far more looks than any readout class, and a model trained on it misreads words such as
``GOLD`` as digits (docs/scrape.md, "The other class").

Speed: glyphs are rendered once per (face, size) (foldcnn.data.fonts); per image only the glyph
masks are added into an alpha canvas; backgrounds and effects run vectorized over chunks of
CHUNK images, each with its own seed so chunks can be made in any order or process.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch

from foldcnn.data.backgrounds import PALETTES, backgrounds, discs
from foldcnn.data.base import ArrayDataset
from foldcnn.data.effects import add_noise, blur, composite_text, jpeg, to_uint8
from foldcnn.data.fonts import (
    FontFace,
    face_record,
    font_faces,
    font_source,
    freetype_version,
    glyph_set,
    ink_box,
    layout,
    paste,
)
from foldcnn.data.game_tasks import (
    OTHER,
    GameTextTask,
    Readout,
    game_task,
    game_task_classes,
    list_game_tasks,
)
from foldcnn.errors import UsageError

__all__ = ["GameTextDataset", "generate_game_text", "game_text_arrays", "game_text_chunk", "render_readouts",
           "list_game_tasks", "game_task_classes", "game_task", "OTHER", "GENERATOR_VERSION"]

GENERATOR_VERSION = "foldcnn-game-text/1"  # bump whenever the output for a seed changes
CHUNK = 1024  # images per independently seeded chunk (part of the output's definition)
MIN_DIGIT_PX, MIN_DIGIT_FRAC = 8, 0.45  # digits at least this tall: legible, not tiny
TRACKING = (-1, 0, 0, 0, 1, 1, 2)  # extra px between letters
P_WHOLE = 0.6  # share of valid readouts placed wholly inside the crop when they fit
P_ICON = 0.35
OTHER_KINDS = ("empty", "placeholder", "words", "garbled", "cut", "out_of_range")
OTHER_P = (0.15, 0.12, 0.13, 0.12, 0.33, 0.15)
WORDS = ("GOLD", "LVL", "KDA", "PAUSED", "DEFEAT", "VICTORY", "LOADING", "SQUADS", "LEFT", "KILLS",
         "RESPAWN", "ANCHOR", "COINS", "WAIT", "READY", "OFFLINE", "N/A", "AFK", "SHOP", "BOUNTY",
         "ELIMINATED", "SPECTATING", "REVIVE", "ZONE", "TIME", "XP", "MVP", "GG", "ACE", "OK")
GARBLE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ-?/#*%+!<>"
DIGITS = "0123456789"


def _fit_width(fit: str, gs: dict) -> int:
    """Ink width of ``fit`` at plain spacing, any digit in place of each '8' (worst case)."""
    adv = max(gs[d].advance for d in DIGITS)
    pen, x0, x1 = 0.0, 1 << 30, -(1 << 30)
    for ch in fit:
        opts = DIGITS if ch == "8" else ch
        x0 = min(x0, int(pen) + min(gs[o].ink_x0 for o in opts))
        x1 = max(x1, int(pen) + 1 + max(gs[o].ink_x1 for o in opts))
        pen += adv if ch == "8" else gs[ch].advance
    return x1 - x0


@functools.lru_cache(maxsize=None)
def font_sizes(task: str, face: FontFace) -> tuple[int, ...]:
    """Sizes (px) at which ``face`` draws the task's digits legibly and its widest kept span
    (``GameTextTask.fit``, without extra letter spacing) fits inside the crop."""
    spec = game_task(task)
    h, w = spec.size
    sizes = []
    for size in range(6, 64):
        gs = glyph_set(face, size)
        y0 = min(gs[ch].ink_y0 for ch in set(spec.fit.replace("8", DIGITS)))
        y1 = max(gs[ch].ink_y1 for ch in set(spec.fit.replace("8", DIGITS)))
        if y1 - y0 > h - 2 or _fit_width(spec.fit, gs) > w - 3:  # 1 px slack for rounding
            break
        if max(gs[d].ink_y1 - gs[d].ink_y0 for d in DIGITS) >= max(MIN_DIGIT_PX, MIN_DIGIT_FRAC * h):
            sizes.append(size)
    if not sizes:
        raise UsageError(f"font {face.name} has no legible size that fits {task}'s {h}x{w} crop")
    return tuple(sizes)


def _other_readout(spec: GameTextTask, kind: str, r: list[int]) -> tuple[Readout | None, bool]:
    """The text of an ``other`` image and whether its classified field must be cut off."""
    if kind == "empty":
        return None, False
    if kind == "placeholder":
        t = spec.placeholders[r[3] % len(spec.placeholders)]
    elif kind == "words":
        t = WORDS[r[3] % len(WORDS)]
    elif kind == "garbled":
        t = "".join(GARBLE[(r[3] >> (5 * j)) % len(GARBLE)] for j in range(2 + r[2] % 5))
    elif kind == "out_of_range" and spec.out_of_range is not None:
        return spec.out_of_range(r), False
    else:  # "cut" (and out_of_range for tasks where every value has a class)
        return spec.make(r[3] % (spec.num_classes - 1), r), True
    return Readout(t, (0, len(t)), (0, len(t))), False


def place_readout(spec: GameTextTask, ro: Readout, cut: bool, face: FontFace, u, r: list[int],
                  tracking: int) -> tuple[list, int, int, tuple[int, int, int, int]]:
    """Lay out one readout and choose its origin in the crop: the ``keep`` span lies fully
    inside, or with ``cut`` the field's innermost glyph straddles the crop edge. ``u`` holds
    five uniforms (size, x, y, cut depth, whole-or-clipped) and ``r`` random ints. Returns
    (placed glyphs, ox, oy, box): box = x extent of all ink and y extent of the kept ink."""
    h, w = spec.size
    sizes = font_sizes(spec.name, face)
    k = int(u[0] * len(sizes))
    placed = layout(ro.text, glyph_set(face, sizes[k]), tracking)
    kx0, kx1, ky0, ky1 = ink_box(placed, *ro.keep)
    while kx1 - kx0 > w - 2 and (tracking > 0 or k > 0):
        # too wide to keep whole (letter spacing, or a longer 'other' text): plain spacing, then
        # smaller sizes; the task's own fields always fit at plain spacing (font_sizes)
        k, tracking = (k, 0) if tracking > 0 else (k - 1, 0)
        placed = layout(ro.text, glyph_set(face, sizes[k]), 0)
        kx0, kx1, ky0, ky1 = ink_box(placed, *ro.keep)
    ax0, ax1, _, _ = ink_box(placed, 0, len(placed))
    lo, hi = 1 - ky0, h - 1 - ky1
    oy = lo + int(u[2] * (hi - lo + 1)) if hi >= lo else (lo + hi) // 2
    if cut:  # cut through the field's innermost glyph; 15-35 % of it stays: not readable
        left = r[2] % 2 == 0
        i = ro.field[1] - 1 if left else ro.field[0]
        gx0, gx1, _, _ = ink_box(placed, i, i + 1)
        keep_px = (0.15 + 0.2 * u[3]) * (gx1 - gx0)
        ox = -int(round(gx1 - keep_px)) if left else w - int(round(gx0 + keep_px))
    else:
        lo, hi = 1 - kx0, w - 1 - kx1
        whole_lo, whole_hi = max(lo, 1 - ax0), min(hi, w - 1 - ax1)
        if u[4] < P_WHOLE and whole_lo <= whole_hi:
            lo, hi = whole_lo, whole_hi
        ox = lo + int(u[1] * (hi - lo + 1)) if hi >= lo else (lo + hi) // 2
    return placed, ox, oy, (ox + ax0, ox + ax1, oy + ky0, oy + ky1)


def render_game_text(spec: GameTextTask, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Images uint8 (N, 3, H, W) for ``labels`` (N,), all randomness drawn from ``rng``."""
    n, other = len(labels), spec.num_classes - 1
    faces = font_faces()
    face_i = rng.integers(0, len(faces), n).tolist()
    u = rng.random((n, 5))
    r = rng.integers(0, 1 << 30, (n, 4)).tolist()
    track = rng.choice(TRACKING, n).tolist()
    kinds = rng.choice(len(OTHER_KINDS), n, p=OTHER_P).tolist()
    texts = [(spec.make(c, r[i]), False) if c != other else _other_readout(spec, OTHER_KINDS[kinds[i]], r[i])
             for i, c in enumerate(labels.tolist())]
    return render_readouts(spec, texts, face_i, u, r, track, rng)


def render_readouts(spec: GameTextTask, texts: list[tuple[Readout | None, bool]], face_i: list[int], u: np.ndarray,
                    r: list[list[int]], track: list[int], rng: np.random.Generator) -> np.ndarray:
    """Images uint8 (N, 3, H, W) of given readouts: ``texts`` holds (readout or None for an
    empty crop, whether its field is cut); font face index, the five uniforms, random ints and
    letter spacing per image as :func:`render_game_text` draws them; background, colours and
    effects drawn from ``rng``. What :func:`render_game_text` renders (and e.g. a synthetic
    screen's HUD, foldcnn.data.screens, with readouts of its own)."""
    n, (h, w) = len(texts), spec.size
    faces = font_faces()
    alpha = np.zeros((n, h, w), np.float32)
    box = np.tile(np.array([-999, -999, h // 4, 3 * h // 4], np.int32), (n, 1))
    for i, (ro, cut) in enumerate(texts):
        if ro is not None:
            placed, ox, oy, box[i] = place_readout(spec, ro, cut, faces[face_i[i]], u[i], r[i], track[i])
            paste(alpha[i], placed, ox, oy)
        elif spec.icon:  # an icon with no number is still no readout
            box[i, :2] = int(u[i, 1] * (w + 10))

    text_anchors = PALETTES[spec.palette][1]
    img = backgrounds(rng, n, h, w, spec.palette)
    if spec.icon:
        rad = np.maximum((box[:, 3] - box[:, 2]) * rng.uniform(0.4, 0.55, n), 2.5)
        cx = box[:, 0] - rad - rng.uniform(1.5, 4, n)
        coin = np.clip(np.array([0.86, 0.68, 0.25]) + rng.normal(0, 0.07, (n, 3)), 0, 1)
        img = discs(img, cx, (box[:, 2] + box[:, 3]) / 2, rad, coin, rng.random(n) < P_ICON)
    img = composite_text(rng, img, alpha, text_anchors)
    img = add_noise(rng, blur(rng, img))
    return jpeg(rng, to_uint8(img))


def _seq(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def check_other_share(other_share: float | None) -> None:
    """Refuse a share of 'other' images (``--other-share``) outside (0, 1)."""
    if other_share is not None and not 0.0 < other_share < 1.0:
        raise UsageError(f"--other-share must be between 0 and 1 (exclusive), e.g. 0.1; got {other_share}")


def balanced_labels(num_classes: int, n: int, seed: int, other_share: float | None = None) -> np.ndarray:
    """n labels, every class n // K or n // K + 1 times, in a seeded random order. With
    ``other_share``, the last class ('other') gets round(n * other_share) labels and the other
    K - 1 classes share the rest evenly (counts differ by at most one)."""
    if other_share is None:
        return _seq(seed, 0).permutation(np.arange(n, dtype=np.int64) % num_classes)
    check_other_share(other_share)
    n_other = int(round(n * other_share))
    labels = np.concatenate([np.arange(n - n_other, dtype=np.int64) % (num_classes - 1),
                             np.full(n_other, num_classes - 1, np.int64)])
    return _seq(seed, 0).permutation(labels)


def game_text_chunk(task: str, n: int, seed: int, chunk: int,
                    other_share: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images [chunk * CHUNK, (chunk + 1) * CHUNK) of ``game_text_arrays(task, n, seed, other_share=...)``."""
    spec = game_task(task)
    labels = balanced_labels(spec.num_classes, n, seed, other_share)[chunk * CHUNK : (chunk + 1) * CHUNK]
    return render_game_text(spec, labels, _seq(seed, 1, chunk)), labels


def game_text_arrays(task: str, n: int, seed: int = 0, progress: Callable[[int], None] | None = None, *,
                     other_share: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, H, W) and int64 labels (N,); ``progress(k)`` after each k images;
    ``other_share``: see :func:`balanced_labels`."""
    spec = game_task(task)
    if n < 0:
        raise UsageError(f"n must be >= 0, got {n}")
    h, w = spec.size
    images = np.empty((n, 3, h, w), np.uint8)
    labels = balanced_labels(spec.num_classes, n, seed, other_share)
    for c in range(-(-n // CHUNK)):
        s = slice(c * CHUNK, min(n, (c + 1) * CHUNK))
        images[s] = render_game_text(spec, labels[s], _seq(seed, 1, c))
        if progress is not None:
            progress(s.stop - s.start)
    return images, labels


def generator_meta(task: str, seed: int, *, fonts_detail: bool = False, other_share: float | None = None) -> dict:
    spec = game_task(task)
    faces = font_faces()
    return {
        "generator": GENERATOR_VERSION,
        "task": task,
        "seed": int(seed),
        **({} if other_share is None else {"other_share": float(other_share)}),
        "input_shape": [3, *spec.size],
        "text": spec.text_format,
        "class_field": spec.class_field,
        "fonts": [face_record(f) for f in faces] if fonts_detail else [f.name for f in faces],
        "font_source": font_source(),
        "freetype": freetype_version(),
    }


class GameTextDataset(ArrayDataset):
    """``n`` synthetic crops of a game task, uint8 (N, 3, H, W), labels (N,), classes, meta.

    The same (task, n, seed, other_share) gives identical arrays; classes are balanced (counts
    differ by at most one) unless ``other_share`` gives 'other' its own share; ``classes[-1]`` is 'other'."""

    def __init__(self, task: str, n: int, seed: int = 0, *,
                 progress: Callable[[int], None] | None = None, other_share: float | None = None):
        spec = game_task(task)
        images, labels = game_text_arrays(task, n, seed, progress, other_share=other_share)
        meta = generator_meta(task, seed, other_share=other_share)
        meta["n"] = int(n)
        super().__init__(torch.from_numpy(images), torch.from_numpy(labels), spec.classes, meta)
        self.task = task


def generate_game_text(task: str, n: int, seed: int = 0) -> GameTextDataset:
    """Same as ``GameTextDataset(task, n, seed)``."""
    return GameTextDataset(task, n, seed)
