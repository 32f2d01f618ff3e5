"""Small data sets the recipe was not tuned on: does `foldcnn fold` hold with default flags?

    pip install -e '.[robustness]'      # scikit-learn: its wheel ships the digits and two photos
    python experiments/published/robustness_suite.py --out runs/robustness            # the tuning cases
    python experiments/published/robustness_suite.py --out runs/robustness --cases parity-2   # the held-out case
    python experiments/published/robustness_suite.py --out runs/robustness --table --cases CASE,...  # the table
    python experiments/published/robustness_suite.py --out runs/robustness --cases CASE --spread 0,1,2,3  # seed spread

should give, per case, the four test top-1 numbers of docs/accuracy.md's section "Small data sets
the recipe was not tuned on" (the original within 1 point of the plain loop, f=4 within 1.0 point
of the original, f=4 not below the undistilled f=4), written to results/robustness/<case>_<commit>.json
with the commands, date, CPU, commit and load. Each case is one unsplit or pre-split tree of PNGs
and a user CNN of its own shape (classes in this file, imported by path as the CLI does):

* ``digits-10``: scikit-learn's 1,797 8x8 grey digits, ``--split 0.6,0.1,0.3`` (1,078 training
  images); examples/my_cnn.py (own BatchNorm, residual blocks, global pooling, MLP head).
* ``apex-22``: `foldcnn data game apex-squad-count` with 1,500 training images (colour 19x25,
  22 classes); ``PlainCNN`` (no BatchNorm, no residual, max-pooling, global pooling, linear head).
* ``patches-40``: 16x16 colour patches of scikit-learn's two sample photos, the class being the
  region of a 4x5 grid a patch is cut from (40 classes, 100 each, 2,400 training images);
  ``HeadBN`` (BatchNorm in the convs and BatchNorm1d in the MLP head, a residual add, max-pooling).
* ``parity-2`` (held out: not run while the recipe was tuned): the digits as even/odd (2 classes),
  ``--split 0.3,0.1,0.6`` (539 training images); ``ResNoBN`` (residual adds without BatchNorm).

For each case: (1) a plain PyTorch loop on the very same split (the unfolded CNN, AdamW, one-cycle,
the best validation epoch; the best of two learning rates by validation top-1), (2) `foldcnn fold
--fold 4 --train-only` with default flags (the original, then f=4 distilled from it), (3) `foldcnn
train --fold 4` without a teacher, the same default budget. One thread each, one run at a time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "robustness"
TUNING_CASES = ("digits-10", "apex-22", "patches-40")
HELD_OUT = ("parity-2",)


# ---------------------------------------------------------------- user CNNs of different shapes
class PlainCNN(nn.Module):
    """conv-ReLU-maxpool twice, a conv, global average pooling, one linear layer: no BatchNorm."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class HeadBN(nn.Module):
    """Own BatchNorm in the convs and in the MLP head (BatchNorm1d), a residual add, max-pooling."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.c1, self.b1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.c2, self.b2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.relu, self.pool = nn.ReLU(), nn.MaxPool2d(2)
        self.c3 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width, 64), nn.BatchNorm1d(64), nn.ReLU(),
                                  nn.Linear(64, num_classes))

    def forward(self, x):
        x = self.stem(x)
        x = self.relu(x + self.b2(self.c2(self.relu(self.b1(self.c1(x))))))
        return self.head(self.gap(self.c3(self.pool(x))))


class ResNoBN(nn.Module):
    """Residual adds without any normalization, global pooling, an MLP head."""

    def __init__(self, num_classes: int = 2, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.c1, self.c2 = nn.Conv2d(width, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)
        self.relu, self.gap = nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x):
        x = self.stem(x)
        x = self.relu(x + self.c2(self.relu(self.c1(x))))
        return self.head(self.gap(x))


# ---------------------------------------------------------------- the data of each case
def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _digits(out: Path, label) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (im, y) in enumerate(zip(d.images, d.target)):
        _write_png(out / label(int(y)) / f"{i:04d}.png", (im * 255 / 16).round().astype(np.uint8))


def _patches(out: Path, per_class: int = 100, size: int = 16, grid=(4, 5), seed: int = 0) -> None:
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    for p, photo in enumerate(load_sample_images().images):  # china.jpg, flower.jpg: 427 x 640 x 3
        h, w = photo.shape[0] // grid[0], photo.shape[1] // grid[1]
        for r in range(grid[0]):
            for c in range(grid[1]):
                name = f"p{p}r{r}c{c}"
                for i in range(per_class):
                    y0 = r * h + rng.integers(0, h - size)
                    x0 = c * w + rng.integers(0, w - size)
                    _write_png(out / name / f"{i:03d}.png", photo[y0:y0 + size, x0:x0 + size])


def _game(out: Path, task: str, train: int, val: int, test: int) -> None:
    subprocess.run([sys.executable, "-m", "foldcnn", "data", "game", task, "--out", str(out), "--train-size", str(train),
                    "--val-size", str(val), "--test-size", str(test), "--quiet"], check=True)


CASES = {
    "digits-10": dict(model="examples.my_cnn:MyCNN", split="0.6,0.1,0.3",
                      make=lambda out: _digits(out, str)),
    "apex-22": dict(model="experiments.published.robustness_suite:PlainCNN", split=None,
                    make=lambda out: _game(out, "apex-squad-count", 1500, 300, 1000)),
    "patches-40": dict(model="experiments.published.robustness_suite:HeadBN", split="0.6,0.1,0.3", make=_patches),
    "parity-2": dict(model="experiments.published.robustness_suite:ResNoBN", split="0.3,0.1,0.6",
                     make=lambda out: _digits(out, lambda y: "even" if y % 2 == 0 else "odd")),
}


# ---------------------------------------------------------------- the plain PyTorch loop
def plain_loop(case: str, data: Path, *, lrs=(1e-3, 3e-3), steps: int = 4000, batch_size: int = 64,
               seed: int = 0) -> dict:
    """The unfolded CNN on foldcnn's own split of ``data`` (same images), trained the ordinary way:
    AdamW (decay 5e-4), one-cycle over ``steps`` steps, shuffled batches, the best validation epoch's
    weights; each learning rate of ``lrs``, the one best on validation reported. ``seed`` sets the
    initial weights and the batch order."""
    import torch
    import torch.nn.functional as F

    from foldcnn.models.imported import build_original
    from foldcnn.train.sources import DataSpec, load_splits

    spec = CASES[case]
    split = tuple(float(v) for v in spec["split"].split(",")) if spec["split"] else (0.8, 0.1, 0.1)
    s = load_splits(DataSpec(data_dir=str(data), split=split), progress=False)
    k = s.train.num_classes

    def as_float(ds):
        return ds.images.float() / 255.0, ds.labels

    (xtr, ytr), (xva, yva), (xte, yte) = as_float(s.train), as_float(s.val), as_float(s.test)

    def accuracy(model, x, y):
        model.eval()
        with torch.no_grad():
            return float((torch.cat([model(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)]) == y)
                         .float().mean())

    runs = []
    for lr in lrs:
        torch.manual_seed(seed)
        model = build_original(spec["model"], {"num_classes": k})
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        g = torch.Generator().manual_seed(seed)
        best, best_state, step = -1.0, None, 0
        while step < steps:
            model.train()
            order = torch.randperm(len(xtr), generator=g)
            for i in range(0, len(order) - batch_size + 1, batch_size):
                if step == steps:
                    break
                idx = order[i:i + batch_size]
                loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
            val = accuracy(model, xva, yva)
            if val > best:
                best, best_state = val, {n: t.clone() for n, t in model.state_dict().items()}
        model.load_state_dict(best_state)
        runs.append({"lr": lr, "best_val_top1": round(best, 5), "test_top1": round(accuracy(model, xte, yte), 5)})
    chosen = max(runs, key=lambda r: r["best_val_top1"])
    return {"test_top1": chosen["test_top1"], "lr": chosen["lr"], "steps": steps, "batch_size": batch_size,
            "runs": runs, "train_images": len(xtr), "val_images": len(xva), "test_images": len(xte), "classes": k,
            "seed": seed}


def spread(case: str, out: Path, seeds: list[int], log) -> dict:
    """The original (`foldcnn train --fold 1`, default flags) and the plain loop at each of ``seeds``
    on the case's split: how far one run of either moves with its seed alone (the suite's targets
    compare single runs)."""
    spec = CASES[case]
    data = out / "data" / case
    if not data.is_dir():
        spec["make"](data)
    split = ["--split", spec["split"]] if spec["split"] else []
    rows = []
    for seed in seeds:
        run_dir = out / case / f"original-seed{seed}"
        cmd = [sys.executable, "-m", "foldcnn", "train", "--model", spec["model"], "--data", str(data), *split,
               "--fold", "1", "--threads", "1", "--quiet", "--seed", str(seed), "--out", str(run_dir)]
        if not (run_dir / "run.json").is_file():
            _run(cmd + (["--overwrite"] if run_dir.is_dir() else []), log)
        log(f"{case}: plain PyTorch loop, seed {seed}")
        plain = plain_loop(case, data, seed=seed)
        rows.append({"seed": seed, "original": _summary(run_dir / "run.json"), "plain_loop": plain,
                     "original_command": cmd})
    stats = {}
    for key in ("original", "plain_loop"):
        v = [100 * r[key]["test_top1"] for r in rows]
        stats[key] = {"mean_pct": round(sum(v) / len(v), 2), "min_pct": round(min(v), 2), "max_pct": round(max(v), 2)}
    stats["original_vs_plain_mean_points"] = round(stats["original"]["mean_pct"] - stats["plain_loop"]["mean_pct"], 2)
    return {"case": case, "model": spec["model"], "split": spec["split"], "seeds": seeds, "runs": rows,
            "test_top1": stats}


# ---------------------------------------------------------------- one case
def _run(cmd: list[str], log) -> float:
    t0 = time.perf_counter()
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=ROOT)
    return round(time.perf_counter() - t0, 1)


def _summary(run_json: Path) -> dict:
    r = json.loads(run_json.read_text())
    s, f = r["summary"], r["features"]
    check = (f.get("distillation") or {}).get("check")
    return {"test_top1": s["test_top1"], "best_val_top1": s["best_val_top1"], "best_epoch": s["best_epoch"],
            "epochs_run": s["epochs_run"], "still_improving": s.get("still_improving"),
            "flip_rate": s.get("test_flip_rate"), "budget": f.get("budget"), "distill_check": check,
            "train_seconds": s["train_seconds"]}


def run_case(case: str, out: Path, log) -> dict:
    spec = CASES[case]
    data = out / "data" / case
    if not data.is_dir():
        spec["make"](data)
    split = ["--split", spec["split"]] if spec["split"] else []
    py = [sys.executable, "-m", "foldcnn"]
    fold_cmd = py + ["fold", spec["model"], "--data", str(data), *split, "--fold", "4", "--threads", "1",
                     "--train-only", "--quiet", "--out", str(out / case / "fold")]
    none_cmd = py + ["train", "--model", spec["model"], "--data", str(data), *split, "--fold", "4", "--threads", "1",
                     "--quiet", "--out", str(out / case / "f4-undistilled")]
    seconds = {}
    if not (out / case / "fold" / "fold4" / "run.json").is_file():
        seconds["fold"] = _run(fold_cmd + (["--resume"] if (out / case / "fold").is_dir() else []), log)
    if not (out / case / "f4-undistilled" / "run.json").is_file():
        seconds["f4_undistilled"] = _run(none_cmd + (["--overwrite"] if (out / case / "f4-undistilled").is_dir()
                                                     else []), log)
    t0 = time.perf_counter()
    log(f"{case}: plain PyTorch loop")
    plain = plain_loop(case, data)
    seconds["plain"] = round(time.perf_counter() - t0, 1)
    original = _summary(out / case / "fold" / "original" / "run.json")
    folded = _summary(out / case / "fold" / "fold4" / "run.json")
    undistilled = _summary(out / case / "f4-undistilled" / "run.json")
    pts = lambda a, b: round(100 * (a - b), 2)  # noqa: E731
    targets = {
        "original_vs_plain_points": pts(original["test_top1"], plain["test_top1"]),
        "f4_vs_original_points": pts(folded["test_top1"], original["test_top1"]),
        "f4_vs_undistilled_points": pts(folded["test_top1"], undistilled["test_top1"]),
    }
    targets["met"] = {"original_within_1_of_plain": targets["original_vs_plain_points"] >= -1.0,
                      "f4_within_1_of_original": targets["f4_vs_original_points"] >= -1.0,
                      "f4_not_below_undistilled": targets["f4_vs_undistilled_points"] >= 0.0}
    return {"case": case, "held_out": case in HELD_OUT, "model": spec["model"], "split": spec["split"],
            "plain_loop": plain, "original": original, "f4": folded, "f4_undistilled": undistilled,
            "targets": targets, "commands": {"fold": fold_cmd, "f4_undistilled": none_cmd,
                                             "plain_loop": f"experiments/published/robustness_suite.py plain_loop({case!r})"},
            "wall_seconds": seconds}


def provenance(argv: list[str]) -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip())
    return {"command": " ".join(["python", *argv]), "date": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds"), "cpu": cpu, "commit": commit, "src_dirty": dirty,
            "load_average": os.getloadavg(), "threads": 1}


def teacher_outcome(check: dict | None) -> str:
    """What became of the teacher: off at the early check, or at the end against the finished twin, or kept."""
    if not check:
        return "-"
    if not check["kept"]:
        return f"off at epoch {check['epoch']}"
    final = check.get("final")
    return "off at the end" if final and not final["kept"] else "kept"


def table_row(r: dict) -> str:
    t, f4 = r["targets"], r["f4"]
    kd = teacher_outcome(f4["distill_check"])
    return (f"| {r['case']}{' (held out)' if r['held_out'] else ''} | {r['plain_loop']['train_images']} | "
            f"{r['plain_loop']['classes']} | {r['plain_loop']['test_top1']:.2%} | {r['original']['test_top1']:.2%} | "
            f"{f4['test_top1']:.2%} | {r['f4_undistilled']['test_top1']:.2%} | {kd} | "
            f"{t['original_vs_plain_points']:+.2f} / {t['f4_vs_original_points']:+.2f} / "
            f"{t['f4_vs_undistilled_points']:+.2f} |")


COLUMNS = [
    {"title": "case", "cell": "{case}"}, {"title": "train images", "cell": "{train_images}"},
    {"title": "classes", "cell": "{classes}"}, {"title": "user CNN", "cell": "{cnn}"},
    {"title": "plain loop", "cell": "{plain_top1:.2%}"}, {"title": "original", "cell": "{original_top1:.2%}"},
    {"title": "f=4 (default)", "cell": "{f4_top1:.2%}"}, {"title": "f=4 undistilled", "cell": "{f4_undistilled_top1:.2%}"},
    {"title": "teacher", "cell": "{teacher}"},
    {"title": "original - plain", "cell": "{original_vs_plain_points:+.2f}"},
    {"title": "f=4 - original", "cell": "{f4_vs_original_points:+.2f}"},
    {"title": "f=4 - undistilled", "cell": "{f4_vs_undistilled_points:+.2f}"},
]


def latest_result(case: str) -> Path:
    """The newest results/robustness/CASE_COMMIT.json by its recorded date (CASE.json: the first runs)."""
    files = sorted(RESULTS.glob(f"{case}_*.json")) or [RESULTS / f"{case}.json"]
    return max(files, key=lambda p: json.loads(p.read_text())["date"])


def write_table(cases: list[str]) -> Path:
    """The cases' newest results/robustness/CASE_COMMIT.json files as one results/ table (foldcnn.results)."""
    from foldcnn.results import write_result

    rows, sources = [], {}
    for case in cases:
        path = latest_result(case)
        r = json.loads(path.read_text())
        rows.append({"case": case + (" (held out)" if r["held_out"] else ""),
                     "train_images": r["plain_loop"]["train_images"], "classes": r["plain_loop"]["classes"],
                     "cnn": r["model"].rsplit(":", 1)[1], "plain_top1": r["plain_loop"]["test_top1"],
                     "original_top1": r["original"]["test_top1"], "f4_top1": r["f4"]["test_top1"],
                     "f4_undistilled_top1": r["f4_undistilled"]["test_top1"],
                     "teacher": teacher_outcome(r["f4"]["distill_check"]),
                     **{k: v for k, v in r["targets"].items() if k != "met"}})
        sources[case] = {"file": str(path.relative_to(ROOT)), "date": r["date"], "commit": r["commit"],
                         "load_average": r["load_average"], "load_average_after": r["load_average_after"]}
    return write_result(RESULTS.parent, "robustness small sets", description=(
        "test top-1 on small data sets the recipe was not tuned on: a plain PyTorch loop, the original and "
        "the default f=4 model of `foldcnn fold`, and f=4 without a teacher on the same budget"),
        columns=COLUMNS, rows=rows, setup="one thread per run, one run at a time, on a machine shared with "
        "other jobs", cases=sources)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="work folder (data, runs)")
    p.add_argument("--cases", default=",".join(TUNING_CASES), help=f"comma list of {', '.join(CASES)}")
    p.add_argument("--table", action="store_true", help="only gather the cases' newest results/robustness/CASE_COMMIT.json "
                   "into one results/ table (docs/render.py renders it)")
    p.add_argument("--spread", metavar="SEEDS", help="instead of the suite: the original and the plain loop at each of "
                   "these seeds (e.g. 0,1,2,3), to results/robustness/CASE-spread_COMMIT.json")
    args = p.parse_args(argv)
    if args.table:
        print(write_table(args.cases.split(",")))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for case in args.cases.split(","):
        if case not in CASES:
            p.error(f"unknown case {case!r}; the cases are {', '.join(CASES)}")
        before = provenance([__file__, *argv])
        log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        if args.spread:
            record = {**before, **spread(case, out, [int(v) for v in args.spread.split(",")], log)}
            name = f"{case}-spread"
        else:
            record = {**before, **run_case(case, out, log)}
            name = case
        record["load_average_after"] = os.getloadavg()
        (RESULTS / f"{name}_{record['commit'][:7]}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(record["test_top1"]) if args.spread else table_row(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
