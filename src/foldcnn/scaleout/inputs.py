"""Turn the user's inputs (folders, globs, image and video files, mixed) into the ordered file
list the single-process Predictor would read, and into *units*: the pieces of work one Ray read
task decodes.

Runs on the driver only; nothing here imports Ray. Files are expanded exactly as the Predictor
expands them (foldcnn.infer.sources.expand_path: input order; folders recursive and sorted by
path; globs sorted), so file ``i`` here is the ``i``-th input there and the ``index`` column
numbers rows alike. Fold partners are fixed here, before any parallelism, by the isolation rule
both engines share:

- every video is its own unit and its own fold stream: frames in order, folds of f consecutive
  (strided) frames, the last fold zero-padded;
- consecutive images (a run between videos) form one stream, cut into read units of
  ``images_per_task`` (a multiple of f); within a unit the readable images are folded in order
  and the last fold is zero-padded. Every unit but a run's last holds whole folds, so this is
  the Predictor's grouping, except after an unreadable image (``on_error="skip"``) in a unit
  that is not its run's last: locally the next images move up into the gap, here the unit's
  last fold is padded (docs/scaleout.md).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from foldcnn.data.readers import IMAGE_EXTENSIONS
from foldcnn.errors import MissingInputError, UsageError
from foldcnn.infer.sources import VIDEO_EXTENSIONS, expand_path

__all__ = ["VIDEO_EXTENSIONS", "InputFiles", "expand_inputs", "make_units"]

_GLOB_CHARS = set("*?[")


@dataclass
class InputFiles:
    """``files``: ``(kind, path)`` in input order, kind "image" or "video", paths as the
    Predictor reports them (as given); ``ignored``: files in folders that are neither images
    nor videos; ``unmatched``: globs that matched nothing."""

    files: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[str]:
        return [p for k, p in self.files if k == "image"]

    @property
    def videos(self) -> list[str]:
        return [p for k, p in self.files if k == "video"]

    @property
    def n_files(self) -> int:
        return len(self.files)


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> InputFiles:
    """Folders, globs, image and video files, in any mix -> :class:`InputFiles`, in the order
    the Predictor reads them (a file named twice is read twice, as there).

    Raises FileNotFoundError for a path that does not exist (and is no glob) and ValueError
    when nothing at all matched.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise UsageError("no inputs given; pass image or video files, folders or globs")
    found = InputFiles()
    for item in items:
        s = os.fspath(item)
        if not os.path.exists(s):
            if not _GLOB_CHARS & set(s):
                raise MissingInputError(f"input not found: {s} (give image or video files, folders or globs)")
            if not any(os.path.isfile(m) for m in glob.glob(s, recursive=True)):
                found.unmatched.append(s)
                continue
        try:
            expanded = expand_path(s)
        except MissingInputError:  # a folder without images or videos: nothing from it
            continue
        for kind, obj in expanded:
            if kind == "ignored":
                found.ignored += [str(p) for p in obj]
            else:
                found.files.append(("video" if kind == "video" else "image", str(obj)))
    if not found.n_files:
        what = ", ".join(map(os.fspath, items[:5])) + (", ..." if len(items) > 5 else "")
        raise UsageError(f"no image or video files matched the inputs ({what}); image extensions: "
                         f"{' '.join(IMAGE_EXTENSIONS)}; video extensions: {' '.join(VIDEO_EXTENSIONS)}")
    found.ignored.sort()
    return found


def make_units(files: InputFiles, images_per_task: int) -> tuple[list[str], list[dict], list[int]]:
    """Number the files and cut them into read tasks.

    Returns ``(sources, units, unit_of)``: ``sources[i]`` is file id ``i`` (input order, as the
    Predictor reads them), ``units`` the rows handed to Ray (``{"kind", "ids", "paths"}`` with
    absolute paths: one video, or up to ``images_per_task`` consecutive images of one run), and
    ``unit_of[i]`` the unit of file ``i``.
    """
    sources = [p for _, p in files.files]
    units: list[dict] = []
    run: list[int] = []

    def close_run() -> None:
        for start in range(0, len(run), images_per_task):
            ids = run[start:start + images_per_task]
            units.append({"kind": "images", "ids": ids, "paths": [os.path.abspath(sources[i]) for i in ids]})
        run.clear()

    for i, (kind, path) in enumerate(files.files):
        if kind == "image":
            run.append(i)
            continue
        close_run()
        units.append({"kind": "video", "ids": [i], "paths": [os.path.abspath(path)]})
    close_run()
    unit_of = [0] * len(sources)
    for u, unit in enumerate(units):
        for i in unit["ids"]:
            unit_of[i] = u
    return sources, units, unit_of
