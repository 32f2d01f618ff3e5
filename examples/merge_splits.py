"""Merge DIR/{train,val,test}/<class>/*.png (what `foldcnn data game` writes) into one unsplit folder
OUT/<class>/<split>-<name>.png: the layout most users have, which `foldcnn fold --data` splits itself.

    foldcnn data game sot-coin-count --out game --train-size 2400 --val-size 300 --test-size 300
    python examples/merge_splits.py game images
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def merge_splits(src: str | Path, out: str | Path) -> int:
    """Copy every image of src's train/val/test class folders into out/<class>/; returns the count."""
    src, out = Path(src), Path(out)
    n = 0
    for split in ("train", "val", "test"):
        for f in sorted((src / split).glob("*/*")):
            if f.is_file():
                (out / f.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, out / f.parent.name / f"{split}-{f.name}")
                n += 1
    if n == 0:
        raise SystemExit(f"no images under {src}/{{train,val,test}}/<class>/")
    return n


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python examples/merge_splits.py SRC_DIR OUT_DIR")
    print(f"{merge_splits(sys.argv[1], sys.argv[2])} images -> {sys.argv[2]}")
