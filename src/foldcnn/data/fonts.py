"""Fonts for the synthetic game text: TrueType faces, a glyph cache, and string layout.

Speed comes from rendering each glyph once per (face, size) with FreeType into an alpha mask
and composing strings by adding those masks with numpy; FreeType never runs per image.

Faces: the DejaVu Sans / Sans Mono / Serif families (regular, bold, oblique, bold oblique) that
matplotlib ships in ``mpl-data/fonts/ttf`` (docs/design.md, "Dependencies": matplotlib is an optional extra
and its bundled fonts render the text), plus Pillow's built-in scalable font
(``ImageFont.load_default(size)``). Without matplotlib only the built-in font is used and
``font_source()`` says so.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

# Every character any task may draw; glyphs outside this set are never needed.
CHARSET = "0123456789.,:k -?/#*%+!<>" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
BUILTIN = "Pillow-builtin"
# File names in matplotlib's mpl-data/fonts/ttf (matplotlib >= 2.0 ships all twelve).
DEJAVU_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
)
# Ink below this alpha does not count when measuring what is visible (anti-aliasing fringe).
INK_ALPHA = 0.25


@dataclass(frozen=True)
class FontFace:
    """One typeface: ``path`` is None for Pillow's built-in font."""

    name: str
    path: str | None

    def load(self, size: int) -> ImageFont.FreeTypeFont:
        if self.path is None:
            return ImageFont.load_default(size)
        return ImageFont.truetype(self.path, size)


@dataclass(frozen=True)
class Glyph:
    """An alpha mask placed at (pen_x + dx, baseline + dy); ink spans are relative to the pen."""

    mask: np.ndarray  # float32 (h, w) in [0, 1]
    dx: int
    dy: int
    advance: float
    ink_x0: int
    ink_x1: int  # exclusive
    ink_y0: int
    ink_y1: int  # exclusive


def _matplotlib_font_dir() -> str | None:
    try:
        import matplotlib  # optional extra, imported only here
    except ImportError:
        return None
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@functools.lru_cache(maxsize=None)
def font_faces() -> tuple[FontFace, ...]:
    """The faces the generator draws from, in a fixed order (part of the generator's output)."""
    faces = []
    root = _matplotlib_font_dir()
    if root is not None:
        for fname in DEJAVU_FILES:
            path = os.path.join(root, fname)
            if os.path.isfile(path):
                faces.append(FontFace(fname[: -len(".ttf")], path))
    faces.append(FontFace(BUILTIN, None))
    return tuple(faces)


def font_source() -> str:
    """One line for manifests: where the faces came from."""
    n = len(font_faces()) - 1
    if n == 0:
        return "Pillow built-in font only (matplotlib is not installed; pip install foldcnn[plots])"
    return f"{n} DejaVu faces from matplotlib's mpl-data + Pillow built-in font"


@functools.lru_cache(maxsize=None)
def glyph_set(face: FontFace, size: int) -> dict[str, Glyph]:
    """Every CHARSET glyph of ``face`` at ``size`` px, rendered once per process."""
    font = face.load(size)
    return {ch: _render(font, ch) for ch in CHARSET}


def _render(font: ImageFont.FreeTypeFont, ch: str) -> Glyph:
    advance = float(font.getlength(ch))
    x0, y0, x1, y1 = font.getbbox(ch, anchor="ls")
    if x1 <= x0 or y1 <= y0:
        return Glyph(np.zeros((0, 0), np.float32), 0, 0, advance, 0, 0, 0, 0)
    # One pixel of slack on every side: anti-aliased edges can spill past FreeType's box.
    x0, y0, x1, y1 = x0 - 1, y0 - 1, x1 + 1, y1 + 1
    im = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(im).text((-x0, -y0), ch, font=font, fill=255, anchor="ls")
    mask = np.asarray(im, dtype=np.float32) / 255.0
    ink = mask >= INK_ALPHA
    if not ink.any():
        return Glyph(np.zeros((0, 0), np.float32), 0, 0, advance, 0, 0, 0, 0)
    cols, rows = np.flatnonzero(ink.any(0)), np.flatnonzero(ink.any(1))
    return Glyph(
        mask, x0, y0, advance,
        x0 + int(cols[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[0]), y0 + int(rows[-1]) + 1,
    )


def layout(text: str, glyphs: dict[str, Glyph], tracking: int = 0) -> list[tuple[Glyph, int]]:
    """Pen x of each character (baseline at 0): the advance plus ``tracking`` px per letter."""
    placed, pen = [], 0.0
    for ch in text:
        g = glyphs[ch]
        placed.append((g, int(round(pen))))
        pen += g.advance + tracking
    return placed


def ink_box(placed: list[tuple[Glyph, int]], i0: int, i1: int) -> tuple[int, int, int, int]:
    """Ink bounds (x0, x1, y0, y1) of characters [i0, i1) relative to the text origin."""
    x0 = y0 = 1 << 30
    x1 = y1 = -(1 << 30)
    for g, x in placed[i0:i1]:
        if g.ink_x1 > g.ink_x0:
            x0, x1 = min(x0, x + g.ink_x0), max(x1, x + g.ink_x1)
            y0, y1 = min(y0, g.ink_y0), max(y1, g.ink_y1)
    return (x0, x1, y0, y1) if x1 > x0 else (0, 0, 0, 0)


def paste(canvas: np.ndarray, placed: list[tuple[Glyph, int]], ox: int, oy: int) -> None:
    """Add the glyph masks into ``canvas`` (H, W) with the text origin at (ox, oy); clips."""
    h, w = canvas.shape
    for g, x in placed:
        m = g.mask
        if not m.size:
            continue
        gx, gy = ox + x + g.dx, oy + g.dy
        a0, a1 = max(gx, 0), min(gx + m.shape[1], w)
        b0, b1 = max(gy, 0), min(gy + m.shape[0], h)
        if a0 < a1 and b0 < b1:
            canvas[b0:b1, a0:a1] += m[b0 - gy : b1 - gy, a0 - gx : a1 - gx]


@functools.lru_cache(maxsize=None)
def face_record(face: FontFace) -> dict:
    """Provenance for manifests: the file's sha256 and a hash of the rendered glyphs, which also
    changes when FreeType renders differently (outputs are byte-identical only when both match)."""
    file_sha = None
    if face.path is not None:
        with open(face.path, "rb") as fh:
            file_sha = hashlib.sha256(fh.read()).hexdigest()
    h = hashlib.sha256()
    for size in (10, 16):
        for ch, g in glyph_set(face, size).items():
            h.update(f"{ch}{g.dx},{g.dy},{g.advance}".encode())
            h.update(np.ascontiguousarray(g.mask).tobytes())
    return {
        "name": face.name,
        "file": os.path.basename(face.path) if face.path else None,
        "sha256": file_sha,
        "render_sha256": h.hexdigest(),
    }


def freetype_version() -> str | None:
    return features.version("freetype2")
