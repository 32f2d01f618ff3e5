"""Turn the user's inputs (folders, globs, image and video files, mixed) into a sorted file list
and into *units*: the pieces of work one Ray read task decodes.

Runs on the driver only; nothing here imports Ray. Fold partners are fixed here, before any
parallelism, so the results do not depend on how Ray schedules or batches the work:

- every video is its own stream: frames in order, folds of f consecutive (strided) frames,
  the last fold zero-padded, exactly as ``Predictor.predict_iter(video)``;
- images form one stream in sorted path order, cut into read groups of ``images_per_task``
  (a multiple of f); within a group the readable images are folded in order and the last
  fold is zero-padded. Without unreadable files this equals ``Predictor.predict(paths)`` over
  all images in sorted order, because every group but the last holds whole folds.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from foldcnn.data.readers import IMAGE_EXTENSIONS
from foldcnn.errors import MissingInputError, UsageError

__all__ = ["VIDEO_EXTENSIONS", "InputFiles", "expand_inputs", "make_units"]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
_GLOB_CHARS = set("*?[")


@dataclass
class InputFiles:
    """Absolute paths, sorted and without duplicates; ``ignored``: files in folders that are
    neither images nor videos; ``unmatched``: globs that matched nothing."""

    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        return len(self.images) + len(self.videos)


def _kind(path: str, explicit: bool) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS or explicit:
        # A file named on the command line is tried as an image; if it is not one, it is
        # reported as failed with the decoder's reason rather than ignored.
        return "image"
    return None


def _walk(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [os.path.join(dirpath, n) for n in filenames if not n.startswith(".")]
    return out


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> InputFiles:
    """Folders (walked recursively, hidden entries skipped), globs (``**`` allowed), image and
    video files, in any mix -> :class:`InputFiles`. Videos are recognised by extension.

    Raises FileNotFoundError for a path that does not exist (and is no glob) and ValueError
    when nothing at all matched.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise UsageError("no inputs given; pass image or video files, folders or globs")
    found = InputFiles()
    seen: set[str] = set()

    def add(path: str, explicit: bool) -> None:
        path = os.path.abspath(path)
        kind = _kind(path, explicit)
        if kind is None:
            found.ignored.append(path)
        elif path not in seen:
            seen.add(path)
            (found.videos if kind == "video" else found.images).append(path)

    for item in items:
        s = os.fspath(item)
        if os.path.isdir(s):
            for p in _walk(s):
                add(p, explicit=False)
        elif os.path.isfile(s):
            add(s, explicit=True)
        elif _GLOB_CHARS & set(s):
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                found.unmatched.append(s)
            for m in matches:
                for p in (_walk(m) if os.path.isdir(m) else [m]):
                    add(p, explicit=False)
        else:
            raise MissingInputError(f"input not found: {s} (give image or video files, folders or globs)")
    if not found.n_files:
        what = ", ".join(map(os.fspath, items[:5])) + (", ..." if len(items) > 5 else "")
        raise UsageError(f"no image or video files matched the inputs ({what}); image extensions: "
                         f"{' '.join(IMAGE_EXTENSIONS)}; video extensions: {' '.join(VIDEO_EXTENSIONS)}")
    found.images.sort()
    found.videos.sort()
    found.ignored.sort()
    return found


def make_units(files: InputFiles, images_per_task: int) -> tuple[list[str], list[dict], list[int]]:
    """Number the files and cut them into read tasks.

    Returns ``(sources, units, unit_of)``: ``sources[i]`` is file id ``i`` (sorted by path, so
    sorting by id sorts by path), ``units`` the rows handed to Ray (``{"kind", "ids", "paths"}``:
    one video, or up to ``images_per_task`` images), and ``unit_of[i]`` the unit of file ``i``.
    """
    sources = sorted(files.images + files.videos)
    index = {s: i for i, s in enumerate(sources)}
    units: list[dict] = []
    unit_of = [0] * len(sources)
    for start in range(0, len(files.images), images_per_task):
        chunk = files.images[start:start + images_per_task]
        units.append({"kind": "images", "ids": [index[p] for p in chunk], "paths": chunk})
    for v in files.videos:
        units.append({"kind": "video", "ids": [index[v]], "paths": [v]})
    for u, unit in enumerate(units):
        for i in unit["ids"]:
            unit_of[i] = u
    return sources, units, unit_of
