"""A screen layout: the regions of a game stream's frames and the checkpoint that reads each.

    {"frame_size": [1280, 720],
     "regions": [{"name": "timer", "box": [600, 8, 80, 20], "checkpoint": "runs/timer/checkpoint"},
                 {"name": "gold",  "box": [1100, 680, 52, 22], "checkpoint": "runs/gold/checkpoint",
                  "resize": "bilinear"}]}

``box`` is ``[x, y, w, h]`` in pixels of a ``frame_size`` ``[W, H]`` frame. A checkpoint path
is relative to the layout file's folder. A region's crop (h, w) is resized to its model's input
(H, W) with :func:`foldcnn.data.resize.resize_rgb`, the function training uses for image
folders, in the mode the region names (``resize``, default bilinear: what training uses for
images); a box of the model's size is not resized at all. Several regions may name one
checkpoint: one model, read in several places.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from foldcnn.errors import FoldcnnError, UsageError

__all__ = ["Layout", "LayoutError", "Region", "load_layout", "parse_layout"]

RESIZE_MODES = ("bilinear", "nearest")


class LayoutError(FoldcnnError, ValueError):
    """A layout that cannot be used; the message names the file, the region and what to fix."""


@dataclass(frozen=True)
class Region:
    name: str
    box: tuple[int, int, int, int]  # x, y, w, h
    checkpoint: str
    resize: str = "bilinear"

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the crop."""
        return self.box[3], self.box[2]

    def scaled(self, sx: float, sy: float) -> Region:
        """The same region on a frame scaled by (sx, sy): corners rounded to whole pixels."""
        x, y, w, h = self.box
        x0, y0, x1, y1 = round(x * sx), round(y * sy), round((x + w) * sx), round((y + h) * sy)
        return replace(self, box=(x0, y0, max(1, x1 - x0), max(1, y1 - y0)))


@dataclass(frozen=True)
class Layout:
    frame_size: tuple[int, int]  # W, H
    regions: tuple[Region, ...]
    path: str = "<layout>"

    def checkpoints(self) -> list[str]:
        """Distinct checkpoints, in the order regions first name them."""
        return list(dict.fromkeys(r.checkpoint for r in self.regions))

    def for_frame(self, width: int, height: int, scale: bool, source: str) -> Layout:
        """This layout on a ``width`` x ``height`` frame: itself when the size matches, scaled
        when ``scale``, else a LayoutError naming both sizes."""
        if (width, height) == self.frame_size:
            return self
        if not scale:
            raise LayoutError(f"{source} has {width}x{height} frames but the layout {self.path} is for "
                              f"{self.frame_size[0]}x{self.frame_size[1]}; pass --scale-layout to scale its boxes")
        sx, sy = width / self.frame_size[0], height / self.frame_size[1]
        return replace(self, frame_size=(width, height), regions=tuple(r.scaled(sx, sy) for r in self.regions))

    def to_dict(self) -> dict:
        return {"frame_size": list(self.frame_size),
                "regions": [{"name": r.name, "box": list(r.box), "checkpoint": r.checkpoint, "resize": r.resize}
                            for r in self.regions]}


def _ints(value, n: int, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != n or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                 for v in value):
        raise LayoutError(f"{what} must be a list of {n} integers, got {value!r}")
    return tuple(value)


def parse_layout(data, path: str = "<layout>", base: str | os.PathLike | None = None,
                 checkpoints: dict[str, str] | None = None) -> Layout:
    """A layout from its JSON value, validated: every box inside the frame, names unique.
    ``checkpoints`` replaces a region's checkpoint by name (a placeholder such as a task name
    -> a checkpoint path); relative paths are taken from ``base``."""
    where = f"layout {path}"
    if not isinstance(data, dict) or not isinstance(data.get("regions"), list) or "frame_size" not in data:
        raise LayoutError(f"{where} must be a JSON object with \"frame_size\": [W, H] and \"regions\": [...]")
    fw, fh = _ints(data["frame_size"], 2, f"{where}: frame_size")
    if fw < 1 or fh < 1:
        raise LayoutError(f"{where}: frame_size must be positive, got {[fw, fh]}")
    if not data["regions"]:
        raise LayoutError(f"{where} has no regions")
    checkpoints = checkpoints or {}
    regions, seen = [], set()
    for i, r in enumerate(data["regions"]):
        if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not r["name"]:
            raise LayoutError(f"{where}: region {i} needs a \"name\" (a non-empty string)")
        name = r["name"]
        what = f"{where}: region {name!r}"
        if name in seen:
            raise LayoutError(f"{what} is named twice; region names must be unique")
        seen.add(name)
        unknown = sorted(set(r) - {"name", "box", "checkpoint", "resize", "task"})
        if unknown:
            raise LayoutError(f"{what} has unknown key(s) {', '.join(unknown)}; the keys are name, box, checkpoint, "
                              "resize (and task, a note)")
        x, y, w, h = _ints(r.get("box"), 4, f"{what}: box [x, y, w, h]")
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > fw or y + h > fh:
            raise LayoutError(f"{what}: box [x, y, w, h] = {[x, y, w, h]} is not inside the {fw}x{fh} frame")
        ck = r.get("checkpoint")
        if not isinstance(ck, str) or not ck:
            raise LayoutError(f"{what} needs a \"checkpoint\" (a checkpoint folder)")
        if ck in checkpoints:  # given on the command line: relative to the current directory
            ck = checkpoints[ck]
        elif base is not None and not os.path.isabs(ck):
            ck = os.path.normpath(os.path.join(base, ck))
        mode = r.get("resize", "bilinear")
        if mode not in RESIZE_MODES:
            raise LayoutError(f"{what}: resize must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
        regions.append(Region(name, (x, y, w, h), ck, mode))
    return Layout((fw, fh), tuple(regions), str(path))


def load_layout(path: str | os.PathLike, checkpoints: dict[str, str] | None = None) -> Layout:
    """Read and validate a layout JSON file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise LayoutError(f"layout {p} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LayoutError(f"layout {p} is not valid JSON: {getattr(e, 'msg', e)} "
                          f"(line {getattr(e, 'lineno', '?')})") from None
    return parse_layout(data, str(p), base=p.parent, checkpoints=checkpoints)


def parse_checkpoint_map(text: str | None) -> dict[str, str]:
    """'timer=runs/t/checkpoint,gold=runs/g/checkpoint' -> {name: path}: a layout's checkpoint
    placeholders (e.g. zoo task names) replaced by checkpoint folders."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"--checkpoints must look like NAME=PATH,NAME=PATH; got {part!r}")
        out[name.strip()] = value.strip()
    return out
