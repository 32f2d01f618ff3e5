"""Batched backgrounds for the synthetic game text: solid colours, gradients, textures and
HUD-like panels, all drawn with vectorized numpy over a whole batch (no per-image loop).

Textures and noise come from banks rendered once per process from a fixed seed; every image
takes a random crop of a random bank entry and colours it, so the user's seed alone decides
the output. Images are float32 (N, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from foldcnn.errors import UsageError

BANK_SEED = 0x6A3E  # fixed: the banks are part of the generator, not of the user's seed
BANK_SIZE = (96, 160)  # (H, W) of every bank entry; crops must fit inside
NUM_TEXTURES = 48
NUM_NOISE = 8

# Colour styles: (background anchors, text anchors), RGB in [0, 1]. About half of the images
# use a task's style (HUD-like colours), the rest fully random colours.
PALETTES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "lol": (
        np.array([[0.04, 0.07, 0.12], [0.05, 0.12, 0.14], [0.09, 0.07, 0.05], [0.12, 0.14, 0.20],
                  [0.02, 0.03, 0.05], [0.16, 0.20, 0.24]]),
        np.array([[0.78, 0.67, 0.43], [0.94, 0.90, 0.70], [0.95, 0.95, 0.95], [1.00, 0.84, 0.30],
                  [0.80, 0.86, 0.92]]),
    ),
    "apex": (
        np.array([[0.10, 0.10, 0.10], [0.55, 0.45, 0.33], [0.50, 0.60, 0.70], [0.25, 0.30, 0.20],
                  [0.30, 0.15, 0.12], [0.20, 0.22, 0.25]]),
        np.array([[1.00, 1.00, 1.00], [0.85, 0.85, 0.85], [0.90, 0.22, 0.20], [1.00, 0.60, 0.15]]),
    ),
    "sot": (
        np.array([[0.10, 0.30, 0.40], [0.55, 0.70, 0.85], [0.35, 0.22, 0.12], [0.80, 0.72, 0.55],
                  [0.05, 0.07, 0.15], [0.20, 0.40, 0.35]]),
        np.array([[1.00, 1.00, 1.00], [0.95, 0.90, 0.75], [0.90, 0.75, 0.35], [0.05, 0.05, 0.05]]),
    ),
}


def _normalize(a: np.ndarray) -> np.ndarray:
    a = a - a.min()
    return (a / max(float(a.max()), 1e-6)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, cell: int) -> np.ndarray:
    bh, bw = BANK_SIZE
    small = rng.random((bh // cell + 2, bw // cell + 2)).astype(np.float32)
    big = Image.fromarray(small, mode="F").resize(((bw // cell + 2) * cell, (bh // cell + 2) * cell),
                                                 Image.BICUBIC)
    return np.asarray(big)[:bh, :bw]


def _texture(rng: np.random.Generator, kind: int) -> np.ndarray:
    bh, bw = BANK_SIZE
    yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
    if kind == 0:  # clouds / terrain: octaves of smooth noise
        return _normalize(sum(_smooth_noise(rng, c) / (i + 1) for i, c in enumerate((24, 12, 6, 3))))
    if kind == 1:  # stripes at any angle (HUD hatching, planks)
        th, period = rng.uniform(0, np.pi), rng.uniform(3, 14)
        s = np.sin(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / period)
        return _normalize(np.tanh(rng.uniform(0.5, 4) * s))
    if kind == 2:  # HUD grid / scanlines
        p, q = int(rng.integers(3, 12)), int(rng.integers(3, 12))
        lines = ((xx % p) < 1) | ((yy % q) < 1) if rng.random() < 0.6 else (yy % q) < rng.integers(1, 3)
        return _normalize(lines.astype(np.float32) + 0.3 * _smooth_noise(rng, 12))
    if kind == 3:  # brushed metal: noise smeared along one axis
        a = rng.random((bh, bw + 32)).astype(np.float32)
        c = np.cumsum(a, axis=1)
        return _normalize(c[:, 32:] - c[:, :-32] + 8 * _smooth_noise(rng, 24))
    # halftone dots
    p = rng.uniform(3, 8)
    d = np.hypot((xx % p) - p / 2, (yy % p) - p / 2)
    return _normalize(np.clip(p / 3 - d, 0, None) + 0.5 * _smooth_noise(rng, 12))


@functools.lru_cache(maxsize=None)
def texture_bank() -> np.ndarray:
    """(NUM_TEXTURES, 96, 160) float32 in [0, 1], identical in every process."""
    rng = np.random.default_rng(BANK_SEED)
    return np.stack([_texture(rng, i % 5) for i in range(NUM_TEXTURES)])


@functools.lru_cache(maxsize=None)
def noise_bank() -> np.ndarray:
    """(NUM_NOISE, 96, 160) float32 standard normal, identical in every process."""
    rng = np.random.default_rng(BANK_SEED + 1)
    return rng.standard_normal((NUM_NOISE,) + BANK_SIZE, dtype=np.float32)


def bank_crops(rng: np.random.Generator, bank: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
    """A random (h, w) crop of a random entry for each of n images: (n, h, w)."""
    bh, bw = bank.shape[1:]
    if h > bh or w > bw:
        raise UsageError(f"crops of {h}x{w} do not fit the {bh}x{bw} background banks")
    k = rng.integers(0, bank.shape[0], n)
    y = rng.integers(0, bh - h + 1, n)[:, None, None] + np.arange(h)[None, :, None]
    x = rng.integers(0, bw - w + 1, n)[:, None, None] + np.arange(w)[None, None, :]
    return bank[k[:, None, None], y, x]


def _colours(rng: np.random.Generator, anchors: np.ndarray, n: int, p_styled: float) -> np.ndarray:
    styled = anchors[rng.integers(0, len(anchors), n)] + rng.normal(0, 0.06, (n, 3))
    free = rng.random((n, 3))
    grey = free.mean(1, keepdims=True)  # tone down the neon that uniform RGB gives
    free = grey + (free - grey) * rng.uniform(0.3, 1.0, (n, 1))
    return np.clip(np.where((rng.random(n) < p_styled)[:, None], styled, free), 0, 1).astype(np.float32)


def _b(v) -> np.ndarray:
    """Per-image values (n,) as float32 (n, 1, 1, 1) for broadcasting over (n, C, H, W)."""
    return np.asarray(v, np.float32).reshape(-1, 1, 1, 1)


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy = np.arange(h, dtype=np.float32)[None, None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, None, :]
    return yy, xx


def _rect(h: int, w: int, y0, y1, x0, x1) -> np.ndarray:
    """(n, 1, h, w) float mask of per-image rectangles [y0, y1) x [x0, x1), as an outer product."""
    ys, xs = np.arange(h), np.arange(w)
    rows = ((ys >= y0[:, None]) & (ys < y1[:, None])).astype(np.float32)
    cols = ((xs >= x0[:, None]) & (xs < x1[:, None])).astype(np.float32)
    return rows[:, None, :, None] * cols[:, None, None, :]


def backgrounds(rng: np.random.Generator, n: int, h: int, w: int, palette: str) -> np.ndarray:
    """n backgrounds (n, 3, h, w) float32 in [0, 1]: a base (solid, gradient or texture) in two
    colours, and for some images a HUD panel (a translucent box, often with a 1 px border)."""
    bg_anchors, text_anchors = PALETTES[palette]
    c0 = _colours(rng, bg_anchors, n, 0.5)
    c1 = np.clip(c0 + rng.normal(0, 0.22, (n, 3)), 0, 1).astype(np.float32)
    kind = rng.choice(3, n, p=[0.25, 0.3, 0.45])  # solid, gradient, texture
    yy, xx = _coords(h, w)

    t = np.zeros((n, 1, h, w), np.float32)
    g = np.flatnonzero(kind == 1)
    th = rng.uniform(0, 2 * np.pi, len(g))
    slope = rng.uniform(0.6, 2.5, len(g))
    ramp = _b(slope * np.cos(th)) * (xx / w - 0.5) + _b(slope * np.sin(th)) * (yy / h - 0.5)
    t[g] = np.clip(0.5 + ramp, 0, 1)
    x = np.flatnonzero(kind == 2)
    t[x, 0] = bank_crops(rng, texture_bank(), len(x), h, w) * _b(rng.uniform(0.3, 1.0, len(x)))[:, 0]
    img = c0[:, :, None, None] + (c1 - c0)[:, :, None, None] * t

    # HUD panels: edges sit inside the crop often enough that the model sees boxes and lines
    p = np.flatnonzero(rng.random(n) < 0.45)
    m = len(p)
    y0, y1 = rng.integers(-3, h // 3, m), rng.integers(h - h // 3, h + 4, m)
    x0, x1 = rng.integers(-4, w // 3, m), rng.integers(w - w // 3, w + 5, m)
    panel = _rect(h, w, y0, y1, x0, x1)
    shade = rng.uniform(0.15, 0.6, (m, 1)).astype(np.float32)
    pc = np.where(rng.random((m, 1)) < 0.7, c0[p] * shade, c0[p] + (1 - c0[p]) * shade)
    alpha = _b(rng.uniform(0.5, 0.95, m)) * panel
    border = (panel - _rect(h, w, y0 + 1, y1 - 1, x0 + 1, x1 - 1)) * _b(rng.random(m) < 0.5)
    bc = _colours(rng, text_anchors, m, 0.6)[:, :, None, None]
    ba = _b(rng.uniform(0.5, 1.0, m)) * border
    sub = img[p]
    sub += alpha * (pc[:, :, None, None] - sub)
    sub += ba * (bc - sub)
    img[p] = sub
    return img


def discs(img: np.ndarray, cx, cy, r, colour: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Draw an anti-aliased filled disc with a darker rim (a coin icon) into the images where
    ``on``, in place; centres, radii and colours are per image (arrays of n)."""
    sel = np.flatnonzero(on)
    h, w = img.shape[2:]
    yy, xx = _coords(h, w)
    d = np.sqrt((yy - _b(cy[sel])) ** 2 + (xx - _b(cx[sel])) ** 2)
    rad = _b(r[sel])
    fill = np.clip(rad + 0.5 - d, 0, 1)
    rim = np.clip(1 - np.abs(d - rad + 1.0), 0, 1) * fill
    sub = img[sel]
    sub += fill * (colour[sel, :, None, None].astype(np.float32) - sub)
    sub *= 1 - 0.5 * rim
    img[sel] = sub
    return img
