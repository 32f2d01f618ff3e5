"""Where training data comes from: a generated game task, an image folder, or a labelled video.

:func:`check_data_spec` runs the cheap checks (paths, folder layout, class folders) before any
image is generated or read, so bad input fails before work is wasted; :func:`load_splits`
then reads train/val/test. Video frames are split in time, not at random (consecutive frames
are near duplicates; NoScope split its videos into contiguous chunks, docs/design.md, "Data tasks and classes").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from foldcnn.data.base import ArrayDataset
from foldcnn.data.splits import SPLIT_NAMES as SPLITS
from foldcnn.data.splits import SPLIT_SEED_OFFSETS, split_seed
from foldcnn.errors import MissingInputError, UsageError
from foldcnn.options import option

__all__ = ["DataSpec", "Splits", "SPLIT_SEED_OFFSETS", "check_data_spec", "load_splits", "file_sha256"]

VIDEO_FILE, LABELS_FILE = "video.mp4", "labels.csv"  # what `foldcnn data video` writes
NOSCOPE_FRAME = (50, 50)  # NoScope resized frames to 50x50 (docs/design.md, "Data tasks and classes")


@dataclass(frozen=True)
class DataSpec:
    """A generated game task (``task``), a folder (``data_dir``) of train/val/test class folders,
    of class folders only (split seeded and stratified by ``split``) or written by ``foldcnn data
    video``, or a video with per-frame labels (``video``)."""

    task: str | None = option(None, "generate this synthetic game task in memory (see 'foldcnn data game')")
    data_dir: str | None = option(None, "folder with train/, val/, test/ subfolders of class folders, a folder of "
                                  "class folders only (DIR/<class>/*.png; split by --split), or a folder written by "
                                  "'foldcnn data video' (video.mp4 + labels.csv)", flag="--data")
    train_size: int = option(6000, "generated training images", metavar="N")
    val_size: int = option(1000, "generated validation images", metavar="N")
    test_size: int = option(2000, "generated test images", metavar="N")
    seed: int = option(0, "seed of the generated data, or of the split of a folder of class folders",
                       flag="--data-seed")
    other_share: float | None = option(
        None, "give the generated task's 'other' class this share of every split (0 < S < 1) instead of 1/K: a task "
        "with many classes sees few 'other' crops (1 in 111 for lol-gold-int) and its models misread HUD words as "
        "numbers; 0.1 is what the scrape guide uses (default: balanced)", metavar="S")
    input_size: tuple[int, int] | None = option(
        None, "resize folder images (or video frames; default 50x50) to HxW (default: their own size; mixed sizes "
        "in a folder of class folders: the most common)", parse="size", metavar="HxW")
    video: str | None = option(None, "a video file; frames are split in time into train/val/test")
    labels: str | None = option(None, "per-frame labels of --video, CSV frame,label (default: labels.csv beside it)")
    video_stride: int = option(1, "keep every N-th video frame", metavar="N")
    video_split: tuple[float, ...] = option((0.6, 0.2, 0.2), "train,val,test fractions of the video in time order",
                                            parse="fractions", metavar="TR,VA,TE")
    video_gap: int = option(0, "frames left out between two video splits", metavar="N")
    on_error: str = option("skip", "unreadable images in a --data folder: skip them (counted on stderr, listed in "
                           "run.json) or stop on the first", choices=("skip", "raise"))
    split: tuple[float, ...] = option((0.8, 0.1, 0.1), "train,val,test fractions of a --data folder of class folders "
                                      "only (seeded by --data-seed, stratified by class)", parse="fractions",
                                      metavar="TR,VA,TE")

    def __post_init__(self):
        if sum(x is not None for x in (self.task, self.data_dir, self.video)) != 1:
            raise UsageError("give exactly one data source: a generated task (--task), a folder (--data) "
                             "or a video (--video)")
        if self.labels is not None and self.video is None:
            raise UsageError("labels (--labels) go with a video (--video)")
        if self.task is not None and self.input_size is not None:
            raise UsageError("input_size (--input-size) resizes folder or video images; a generated task "
                             "has its own fixed size")
        if self.other_share is not None:
            if self.task is None:
                raise UsageError("other_share (--other-share) shapes a generated task's data (--task); a folder "
                                 "or video has the classes it has")
            from foldcnn.data.game_text import check_other_share

            check_other_share(self.other_share)
        if self.task is not None and min(self.train_size, self.val_size, self.test_size) < 1:
            raise UsageError("generated train/val/test sizes must be >= 1")
        if self.on_error not in ("skip", "raise"):
            raise UsageError(f"on_error (--on-error) must be 'skip' or 'raise', got {self.on_error!r}")
        if len(self.video_split) != 3:
            raise UsageError(f"video_split needs 3 fractions (train, val, test), got {self.video_split}")
        if len(self.split) != 3 or min(self.split) <= 0 or abs(sum(self.split) - 1) > 1e-6:
            raise UsageError(f"split needs 3 positive fractions (train, val, test) that sum to 1, e.g. "
                             f"0.8,0.1,0.1; got {','.join(f'{x:g}' for x in self.split)}")


@dataclass
class Splits:
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    meta: dict = field(default_factory=dict)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _class_dirs(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _video_paths(spec: DataSpec) -> tuple[Path, Path]:
    video = Path(spec.video if spec.video is not None else spec.data_dir)
    if video.is_dir():
        video = video / VIDEO_FILE
    labels = Path(spec.labels) if spec.labels is not None else video.parent / LABELS_FILE
    return video, labels


def _is_video_folder(root: Path) -> bool:
    return (root / VIDEO_FILE).is_file() and not (root / "train").is_dir()


def check_data_spec(spec: DataSpec) -> None:
    """Checks that need no image decoded: paths, folder layout, class folders, optional packages."""
    if spec.task is not None:
        from foldcnn.data.game_tasks import game_task

        game_task(spec.task)  # KeyError naming the known tasks
        return
    if spec.data_dir is not None and not _is_video_folder(Path(spec.data_dir)):
        _check_folder(Path(spec.data_dir))
        return
    video, labels = _video_paths(spec)
    for path, missing in ((video, f"video {video} does not exist"),
                          (labels, f"no labels for {video}: {labels} does not exist; pass --labels CSV "
                                   "(header frame,label; one row per frame)")):
        if not path.is_file():
            raise MissingInputError(missing)
    try:
        import av  # noqa: F401
    except ImportError:
        raise UsageError("training on a video needs PyAV: pip install 'foldcnn[video]'") from None


def _is_split_folder(root: Path) -> bool:
    return any((root / n).is_dir() for n in SPLITS)


def _check_class_folders(root: Path) -> None:
    from foldcnn.data.readers import IMAGE_EXTENSIONS

    classes = _class_dirs(root)
    if len(classes) < 2:
        found = f"only the class folder {classes[0]!r}" if classes else "no class folders"
        raise UsageError(f"{root} has {found}; a classifier needs at least 2 classes, one folder of images "
                         f"each ({root}/<class>/*.png), or train/, val/ and test/ subfolders of them")
    exts = tuple(IMAGE_EXTENSIONS)
    if not any(p.suffix.lower() in exts for c in classes for p in (root / c).rglob("*")):
        raise UsageError(f"the class folders of {root} ({', '.join(classes[:6])}) hold no images "
                         f"(extensions {', '.join(exts)})")


def _check_folder(root: Path) -> None:
    if not root.is_dir():
        raise MissingInputError(f"data folder {root} does not exist")
    if not _is_split_folder(root):
        _check_class_folders(root)
        return
    if not all((root / n).is_dir() for n in SPLITS):
        raise UsageError(f"{root} must hold train/, val/ and test/ subfolders, each with one folder per class "
                         "(as written by 'foldcnn data game'), or video.mp4 + labels.csv (as written by "
                         "'foldcnn data video')")
    classes = _class_dirs(root / "train")
    if len(classes) < 2:
        found = f"only the class folder {classes[0]!r}" if classes else "no class folders"
        raise UsageError(f"{root / 'train'} has {found}; a classifier needs at least 2 classes, "
                         "one folder of images each")
    for n in ("val", "test"):
        extra = sorted(set(_class_dirs(root / n)) - set(classes))
        if extra:
            raise UsageError(f"{root / n} has class folders that train/ lacks: {', '.join(extra[:8])}; the model "
                             "can only learn classes with training images: add them to train/ or remove them")


def load_splits(spec: DataSpec, *, progress: bool = False) -> Splits:
    """Read or generate train/val/test; run :func:`check_data_spec` first for early errors."""
    if spec.task is not None:
        from foldcnn.data.game_text import GameTextDataset

        sizes = {"train": spec.train_size, "val": spec.val_size, "test": spec.test_size}
        parts = {k: GameTextDataset(spec.task, n, seed=split_seed(spec.seed, k), other_share=spec.other_share)
                 for k, n in sizes.items()}
        meta = {"source": "generated", "task": spec.task, "seed": spec.seed, "sizes": sizes}
        if spec.other_share is not None:
            meta["other_share"] = spec.other_share
        return Splits(**parts, meta=meta)
    if spec.data_dir is not None and not _is_video_folder(Path(spec.data_dir)):
        return _folder_splits(spec, progress)
    return _video_splits(spec, progress)


def _class_folder_splits(spec: DataSpec, root: Path, progress: bool) -> Splits:
    """One folder of class folders, split seeded and stratified; mixed sizes resized to the most common."""
    from foldcnn.data.readers import image_size_counts, load_image_folder
    from foldcnn.data.splits import split_dataset, stratified_split

    notes, size = [], spec.input_size
    counts = image_size_counts(root) if size is None else {}
    if len(counts) > 1:
        size = next(iter(counts))
        notes.append(f"images under {root} come in {len(counts)} sizes; all are resized to the most common, "
                     f"{size[0]}x{size[1]} (HxW, {counts[size]} of {sum(counts.values())} images); "
                     "--input-size HxW picks another")
    ds = load_image_folder(root, input_size=size, on_error=spec.on_error, progress=progress)
    index = stratified_split(ds.labels, spec.split, seed=spec.seed)
    parts = split_dataset(ds, index)
    files = ds.meta.get("files") or []
    split = {"fractions": list(spec.split), "seed": spec.seed, "stratified": True,
             "sizes": {n: len(p) for n, p in parts.items()},
             "files_sha256": {n: hashlib.sha256("\n".join(files[i] for i in idx.tolist()).encode()).hexdigest()
                             for n, idx in index.items()}}
    for p in parts.values():
        p.meta = {k: v for k, v in p.meta.items() if k != "files"}
    meta = {"source": "class_folders", "path": str(root), "split": split, "input_size": list(ds.input_shape[1:]),
            "sizes_found": {f"{h}x{w}": n for (h, w), n in counts.items()}, "read_report": ds.meta.get("read_report"),
            "notes": notes}
    skipped = list((ds.meta.get("read_report") or {}).get("skipped") or [])
    meta.update({"n_skipped_images": len(skipped), "skipped_images": skipped})
    return Splits(parts["train"], parts["val"], parts["test"], meta)


def _folder_splits(spec: DataSpec, progress: bool) -> Splits:
    from foldcnn.data.readers import DataReadError, load_image_folder

    root = Path(spec.data_dir)
    _check_folder(root)
    if not _is_split_folder(root):
        return _class_folder_splits(spec, root, progress)
    try:
        parts = {"train": load_image_folder(root / "train", input_size=spec.input_size, on_error=spec.on_error,
                                            progress=progress)}
        classes = parts["train"].classes
        for n in ("val", "test"):  # a small split may lack a class: keep train's label order
            parts[n] = load_image_folder(root / n, input_size=spec.input_size, classes=classes,
                                         allow_empty_classes=True, on_error=spec.on_error, progress=progress)
    except DataReadError as e:
        if spec.input_size is None and "differ in size" in str(e):
            raise DataReadError(f"{e} (command line: --input-size HxW)") from None
        raise
    size = parts["train"].input_shape
    for n in ("val", "test"):
        if parts[n].input_shape != size:
            raise UsageError(f"{root / n} images are {parts[n].input_shape[1]}x{parts[n].input_shape[2]} but "
                             f"{root / 'train'} images are {size[1]}x{size[2]} (HxW); pass --input-size HxW "
                             "(input_size=(H, W)) to resize them all")
    manifest = root / "manifest.json"
    digest = file_sha256(manifest) if manifest.exists() else None
    skipped = [{"path": f"{n}/{f['path']}", "reason": f["reason"]}
               for n in SPLITS for f in parts[n].meta["read_report"]["skipped"]]
    return Splits(**parts, meta={"source": "folder", "path": str(root), "manifest_sha256": digest,
                                 "n_skipped_images": len(skipped), "skipped_images": skipped})


def _video_splits(spec: DataSpec, progress: bool) -> Splits:
    from foldcnn.data.readers import load_video
    from foldcnn.data.splits import split_dataset, temporal_split

    video, labels = _video_paths(spec)
    ds = load_video(video, input_size=spec.input_size or NOSCOPE_FRAME, stride=spec.video_stride,
                    labels_csv=labels, progress=progress)
    ranges = temporal_split(len(ds), spec.video_split, gap=spec.video_gap)
    parts = split_dataset(ds, ranges)
    present = sorted(set(parts["train"].labels.tolist()))
    if len(present) < 2:
        only = ds.classes[present[0]] if present else "none"
        raise UsageError(f"the training part of {video} (frames {ranges['train'].start}..{ranges['train'].stop - 1}"
                         f" of the kept frames) holds only class {only!r}; a classifier needs both classes "
                         "there: use a longer video or other --video-split fractions")
    meta = {"source": "video", "path": str(video), "labels_csv": str(labels), "video_sha256": file_sha256(video),
            "labels_sha256": file_sha256(labels), "frame_stride": spec.video_stride, "gap": spec.video_gap,
            "input_size": list(ds.input_shape[1:]), "n_frames_kept": len(ds),
            "splits": {n: [r.start, r.stop] for n, r in ranges.items()}}
    made = ds.meta.get("video_manifest") or {}
    if made.get("command"):
        meta["video_command"] = made["command"]
    return Splits(parts["train"], parts["val"], parts["test"], meta)
