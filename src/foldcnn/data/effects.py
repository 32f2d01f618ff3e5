"""Batched text compositing and image degradations for the synthetic game text.

Text colour is chosen against the background actually under the glyphs so every readout stays
legible; outlines and drop shadows are what game HUDs use on busy backgrounds. Blur, sensor
noise and JPEG artefacts hit a fraction of the images (JPEG through Pillow, one image at a
time, so it is kept to a small fraction for speed).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from foldcnn.data.backgrounds import bank_crops, noise_bank

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as JPEG uses
MIN_CONTRAST = 0.38  # luma difference text vs mean background under it, in [0, 1]
P_OUTLINE, P_SHADOW, P_FILL_GRADIENT = 0.3, 0.25, 0.25
P_BLUR, P_NOISE, P_JPEG = 0.2, 0.45, 0.12


def _b(v) -> np.ndarray:
    return np.asarray(v, np.float32).reshape(-1, 1, 1, 1)


def _set_luma(rgb: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Move colours (n, 3) to luma ``target`` (n,) by mixing with white or black (keeps hue)."""
    rgb = rgb.astype(np.float32)
    l = rgb @ LUMA
    up = target > l
    mix_white = (target - l) / np.maximum(1 - l, 1e-6)
    scale = target / np.maximum(l, 1e-6)
    out = np.where(up[:, None], rgb + (1 - rgb) * mix_white[:, None], rgb * scale[:, None])
    return np.clip(out, 0, 1).astype(np.float32)


def dilate(a: np.ndarray) -> np.ndarray:
    """3x3 max filter of (n, h, w) masks (zero outside)."""
    p = np.pad(a, ((0, 0), (1, 1), (1, 1)))
    h, w = a.shape[1:]
    out = a.copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(out, p[:, dy : dy + h, dx : dx + w], out=out)
    return out


def shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(a)
    h, w = a.shape[1:]
    out[:, dy:, dx:] = a[:, : h - dy, : w - dx]
    return out


def composite_text(rng: np.random.Generator, img: np.ndarray, alpha: np.ndarray,
                   text_anchors: np.ndarray) -> np.ndarray:
    """Draw text masks ``alpha`` (n, h, w) over backgrounds ``img`` (n, 3, h, w), in place:
    a colour with enough luma contrast to the background under the glyphs, optional outline,
    drop shadow and vertical fill gradient."""
    n, _, h, w = img.shape
    alpha = np.minimum(alpha, 1.0, out=alpha)
    lum = img[:, 0] * LUMA[0] + img[:, 1] * LUMA[1] + img[:, 2] * LUMA[2]  # (n, h, w)
    wsum = np.maximum(alpha.sum((1, 2)), 1e-6)
    la = lum * alpha
    mean = la.sum((1, 2)) / wsum
    std = np.sqrt(np.maximum((la * lum).sum((1, 2)) / wsum - mean**2, 0))

    styled = rng.random(n) < 0.6
    tc = np.where(styled[:, None], text_anchors[rng.integers(0, len(text_anchors), n)], rng.random((n, 3)))
    need = MIN_CONTRAST + rng.uniform(0, 0.15, n)
    # busy backgrounds (a panel edge or texture under the text) have no single contrasting
    # colour: use near-white or near-black text and let the opposite outline carry the edge
    busy = std > 0.12
    low = (np.abs(tc @ LUMA - mean) < need) | busy
    target = np.where(mean < 0.5, np.minimum(mean + need, 1.0), np.maximum(mean - need, 0.0))
    target = np.where(busy, np.where(mean < 0.55, 0.92, 0.06), target)
    tc = np.where(low[:, None], _set_luma(tc, target), tc).astype(np.float32)
    bright = (tc @ LUMA) > mean

    # outline and shadow in the opposite luma of the text: dark edges under bright text
    edge = np.where(bright[:, None], rng.uniform(0, 0.15, (n, 3)), rng.uniform(0.85, 1, (n, 3)))
    edge = edge.astype(np.float32)[:, :, None, None]
    outline = (rng.random(n) < P_OUTLINE) | busy
    shadow = (rng.random(n) < P_SHADOW) & ~outline
    s_op, o_op = rng.uniform(0.5, 1.0, n), np.where(busy, 1.0, rng.uniform(0.7, 1.0, n))
    for sel, mask, op in ((np.flatnonzero(shadow), lambda a: shift(a, 1, 1), s_op),
                          (np.flatnonzero(outline), lambda a: np.minimum(dilate(a), 1.0), o_op)):
        a = mask(alpha[sel])[:, None] * _b(op[sel])
        sub = img[sel]
        sub += a * (edge[sel] - sub)
        img[sel] = sub

    yy = np.linspace(0, 1, h, dtype=np.float32)[None, None, :, None]
    fade = _b((rng.random(n) < P_FILL_GRADIENT) * rng.uniform(0.1, 0.25, n))
    fill = tc[:, :, None, None] * (1 - fade * yy)  # darker towards the baseline, HUD-style
    a = alpha[:, None] * _b(rng.uniform(0.85, 1.0, n))
    img += a * (fill - img)
    return img


def blur(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """[1, 2, 1] / 4 separable blur (edge-replicated), blended in by a random weight, on a
    fraction of the images (rescaled or out-of-focus captures)."""
    sel = np.flatnonzero(rng.random(len(img)) < P_BLUR)
    wgt = _b(rng.uniform(0.3, 0.8, len(sel)))
    if not len(sel):
        return img
    x = img[sel]
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    x2 = (p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]) / 4
    x2 = (x2[:, :, :, :-2] + 2 * x2[:, :, :, 1:-1] + x2[:, :, :, 2:]) / 4
    img[sel] = x * (1 - wgt) + x2 * wgt
    return img


def add_noise(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Grey sensor noise, sigma 1-5 % of full scale on a fraction of the images and a dither of
    about one level on the rest (so no two images come out identical), in place."""
    n, _, h, w = img.shape
    sigma = np.where(rng.random(n) < P_NOISE, rng.uniform(0.01, 0.05, n), rng.uniform(0.002, 0.005, n))
    img += _b(sigma) * bank_crops(rng, noise_bank(), n, h, w)[:, None]
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8, rounding; overwrites ``img``."""
    img *= 255.0
    img += 0.5
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def jpeg(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Re-encode a fraction of the uint8 (n, 3, h, w) images as JPEG (quality 30-90), in place."""
    sel = np.flatnonzero(rng.random(len(img)) < P_JPEG)
    quality = rng.integers(30, 91, len(sel))
    for i, q in zip(sel.tolist(), quality.tolist()):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img[i].transpose(1, 2, 0))).save(buf, "JPEG", quality=q)
        buf.seek(0)
        img[i] = np.asarray(Image.open(buf).convert("RGB")).transpose(2, 0, 1)
    return img
