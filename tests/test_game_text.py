import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from foldcnn.cli import main
from foldcnn.data import fonts as fonts_mod
from foldcnn.data import game_text as gt
from foldcnn.data.fonts import BUILTIN, font_faces, ink_box
from foldcnn.data.game_export import SPLITS, game_text_grid, split_seed, write_game_text
from foldcnn.data.game_tasks import OTHER, game_task
from foldcnn.data.game_text import (
    CHUNK, GameTextDataset, game_task_classes, game_text_arrays, game_text_chunk, generate_game_text,
    list_game_tasks, place_readout,
)
from foldcnn.models import GAME_TASKS

# The brief's class counts (docs/design.md, "The paper's models" and "Data tasks and classes").
EXPECTED_K = {"lol-gold-fraction": 11, "lol-gold-int": 111, "lol-timer-minutes": 62,
              "apex-squad-count": 22, "sot-coin-count": 15, "sot-timer": 27}
TASKS = list(EXPECTED_K)


def test_task_list_and_class_lists():
    assert list_game_tasks() == TASKS
    for task, k in EXPECTED_K.items():
        classes = game_task_classes(task)
        assert len(classes) == k == GAME_TASKS[task][0]
        assert len(set(classes)) == k and classes[-1] == OTHER
    assert game_task_classes("lol-gold-int")[:12] == [str(i) for i in range(10)] + ["00", "01"]
    assert game_task_classes("lol-timer-minutes")[-2] == "60"
    assert game_task_classes("sot-coin-count")[0] == "1"


def test_unknown_task_lists_known_ones():
    with pytest.raises(KeyError, match="lol-gold-fraction"):
        GameTextDataset("lol-gold", 4)


@pytest.mark.parametrize("task", TASKS)
def test_readouts_spell_their_class(task):
    spec = game_task(task)
    rng = np.random.default_rng(0)
    for c in range(spec.num_classes - 1):
        for r in rng.integers(0, 1 << 30, (5, 4)).tolist():
            ro = spec.make(c, r)
            field = ro.text[ro.field[0] : ro.field[1]].replace(",", "")
            assert field == spec.classes[c], (ro, spec.classes[c])
            assert ro.keep[0] <= ro.field[0] and ro.field[1] <= ro.keep[1]
    if spec.out_of_range is not None:
        for r in rng.integers(0, 1 << 30, (50, 4)).tolist():
            ro = spec.out_of_range(r)
            assert ro.text[ro.field[0] : ro.field[1]].replace(",", "") not in spec.classes


@pytest.mark.parametrize("task", TASKS)
def test_field_inside_crop_and_cut_straddles_edge(task):
    spec = game_task(task)
    h, w = spec.size
    rng = np.random.default_rng(1)
    for face in font_faces():
        for _ in range(20):
            c = int(rng.integers(0, spec.num_classes - 1))
            r = rng.integers(0, 1 << 30, 4).tolist()
            u, tracking = rng.random(5), int(rng.choice(gt.TRACKING))
            ro = spec.make(c, r)
            placed, ox, oy, _ = place_readout(spec, ro, False, face, u, r, tracking)
            x0, x1, y0, y1 = ink_box(placed, *ro.keep)
            assert 1 <= x0 + ox and x1 + ox <= w - 1 and 1 <= y0 + oy and y1 + oy <= h - 1, (face, ro)
            placed, ox, _, _ = place_readout(spec, ro, True, face, u, r, tracking)
            gx0, gx1 = min((ink_box(placed, i, i + 1)[:2] for i in range(*ro.field)),
                           key=lambda b: abs(b[0] + ox) if b[0] + ox < 0 else abs(b[1] + ox - w))
            visible = min(gx1 + ox, w) - max(gx0 + ox, 0)
            assert gx0 + ox < 0 < gx1 + ox or gx0 + ox < w < gx1 + ox, (face, ro)
            assert 0 < visible <= 0.5 * (gx1 - gx0) + 1, (face, ro)


@pytest.mark.parametrize("task", TASKS)
def test_shapes_dtype_balance_meta(task):
    k, (h, w), _ = GAME_TASKS[task]
    n = 2 * k + 5
    ds = GameTextDataset(task, n, seed=3)
    assert ds.images.shape == (n, 3, h, w) and ds.images.dtype.is_floating_point is False
    assert str(ds.images.dtype) == "torch.uint8" and str(ds.labels.dtype) == "torch.int64"
    counts = ds.class_counts()
    assert max(counts) - min(counts) <= 1 and counts[-1] >= 2  # 'other' present
    assert ds.classes == game_task_classes(task) and ds.num_classes == k
    assert ds.meta["task"] == task and ds.meta["seed"] == 3
    assert ds.meta["generator"] == gt.GENERATOR_VERSION and len(ds.meta["fonts"]) >= 1
    x, y = ds[0]
    assert x.shape == (3, h, w) and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0


def test_deterministic_by_seed_and_chunked_consistently():
    a = generate_game_text("lol-gold-fraction", 1100, seed=7)
    b = GameTextDataset("lol-gold-fraction", 1100, seed=7)
    c = GameTextDataset("lol-gold-fraction", 1100, seed=8)
    assert (a.images == b.images).all() and (a.labels == b.labels).all()
    assert not (a.images == c.images).all()
    imgs, labels = game_text_chunk("lol-gold-fraction", 1100, 7, 1)
    assert len(imgs) == 1100 - CHUNK
    assert np.array_equal(imgs, a.images[CHUNK:].numpy()) and np.array_equal(labels, a.labels[CHUNK:].numpy())


def test_other_share_gives_other_its_share_and_keeps_the_readout_classes_balanced():
    k = game_task("lol-gold-int").num_classes
    default = gt.balanced_labels(k, 500, 3)
    assert np.array_equal(default, gt.balanced_labels(k, 500, 3, None))  # unset: today's data, unchanged
    labels = gt.balanced_labels(k, 500, 3, other_share=0.1)
    counts = np.bincount(labels, minlength=k)
    assert counts[-1] == 50 and counts[:-1].sum() == 450 and counts[:-1].max() - counts[:-1].min() <= 1
    ds = GameTextDataset("lol-gold-int", 300, seed=3, other_share=0.25)
    assert ds.class_counts()[-1] == 75 and ds.meta["other_share"] == 0.25
    assert "other_share" not in GameTextDataset("lol-gold-int", 4, seed=3).meta
    imgs, labs = game_text_chunk("lol-gold-int", 1100, 3, 1, 0.25)  # chunks agree with the whole
    whole_imgs, whole_labs = game_text_arrays("lol-gold-int", 1100, 3, other_share=0.25)
    assert np.array_equal(labs, whole_labs[CHUNK:]) and np.array_equal(imgs, whole_imgs[CHUNK:])
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="between 0 and 1"):
            gt.balanced_labels(k, 10, 0, other_share=bad)


def test_cli_other_share_in_every_split_and_the_manifest(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["data", "game", "apex-squad-count", "--out", str(out), "--train-size", "40", "--val-size", "20",
            "--test-size", "10", "--quiet", "--other-share", "0.5"]
    assert main(args) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["other_share"] == 0.5 and m["command"].endswith("--other-share 0.5")
    assert [m["splits"][s]["class_counts"][OTHER] for s in ("train", "val", "test")] == [20, 10, 5]
    assert len(os.listdir(out / "train" / OTHER)) == 20
    assert main(args[:-1] + ["1.5", "--overwrite"]) == 2
    assert "--other-share must be between 0 and 1" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text()) == m  # refused before anything was replaced


def test_images_are_distinct_within_and_across_splits():
    seen = set()
    for split in SPLITS:
        images, _ = game_text_arrays("apex-squad-count", 600, split_seed(11, split))
        seen |= {img.tobytes() for img in images}
    assert len(seen) == 3 * 600
    assert len({split_seed(11, s) for s in SPLITS}) == 3


def test_fonts_real_faces_and_builtin():
    faces = font_faces()
    assert faces[-1].name == BUILTIN and len(faces) >= 7  # matplotlib is installed in dev
    assert {"DejaVuSans-Bold", "DejaVuSansMono-Oblique", "DejaVuSerif-Italic"} <= {f.name for f in faces}
    rec = fonts_mod.face_record(faces[0])
    assert len(rec["sha256"]) == 64 and len(rec["render_sha256"]) == 64


@pytest.fixture
def no_matplotlib(monkeypatch):
    caches = (fonts_mod.font_faces, fonts_mod.glyph_set, gt.font_sizes)
    for f in caches:
        f.cache_clear()
    monkeypatch.setattr(fonts_mod, "_matplotlib_font_dir", lambda: None)
    yield
    monkeypatch.undo()
    for f in caches:
        f.cache_clear()


def test_without_matplotlib_falls_back_to_builtin_font(no_matplotlib):
    assert [f.name for f in font_faces()] == [BUILTIN]
    ds = GameTextDataset("sot-timer", 60, seed=0)
    assert ds.meta["fonts"] == [BUILTIN] and "matplotlib is not installed" in ds.meta["font_source"]


def test_grid_size():
    im = game_text_grid("sot-timer", rows=2, cols=3, scale=2)
    assert im.size[0] > 3 * 60 and im.size[1] > 2 * 44


# ------------------------------------------------------------------------------------- CLI
def _files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


ARGS = ["data", "game", "sot-timer", "--out", "ds", "--train-size", "40", "--val-size", "12",
        "--test-size", "9", "--data-seed", "5", "--quiet"]


def test_cli_round_trip_and_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(ARGS) == 0
    root = tmp_path / "ds"
    classes = game_task_classes("sot-timer")
    m = json.loads((root / "manifest.json").read_text())
    for split, n in (("train", 40), ("val", 12), ("test", 9)):
        images, labels = game_text_arrays("sot-timer", n, split_seed(5, split))
        for i, (img, lab) in enumerate(zip(images, labels)):
            png = Image.open(root / split / classes[lab] / f"{i:06d}.png")
            assert png.mode == "RGB" and np.array_equal(np.asarray(png).transpose(2, 0, 1), img)
        assert m["splits"][split]["count"] == n == sum(m["splits"][split]["class_counts"].values())
        assert m["splits"][split]["seed"] == split_seed(5, split)
    assert m["task"] == "sot-timer" and m["seed"] == 5 and m["classes"] == classes
    assert m["generator"] == gt.GENERATOR_VERSION and m["foldcnn_version"]
    assert all(len(f["render_sha256"]) == 64 for f in m["fonts"])
    assert all(len(f["sha256"]) == 64 for f in m["fonts"] if f["file"])
    assert m["command"].startswith("foldcnn data game sot-timer --out ds --train-size 40")
    listing = "".join(f"{hashlib.sha256(b).hexdigest()}  {p}\n"
                      for p, b in sorted(_files(root).items()) if p != "manifest.json")
    assert m["files"] == 61 and m["data_sha256"] == hashlib.sha256(listing.encode()).hexdigest()


def test_cli_byte_identical_across_runs_and_workers(tmp_path, monkeypatch):
    outs = []
    for sub, workers in (("a", "1"), ("b", "2")):
        (tmp_path / sub).mkdir()
        monkeypatch.chdir(tmp_path / sub)
        assert main(ARGS + ["--workers", workers]) == 0
        outs.append(_files(tmp_path / sub / "ds"))
    assert outs[0] == outs[1] and len(outs[0]) == 62


def test_cli_refuses_non_empty_dir(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    args = ["data", "game", "apex-squad-count", "--out", str(tmp_path), "--train-size", "5",
            "--val-size", "0", "--test-size", "0", "--quiet"]
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert (tmp_path / "keep.txt").read_text() == "mine"  # only the writer's own files are replaced
    with pytest.raises(FileExistsError):
        write_game_text("apex-squad-count", str(tmp_path), {"train": 1})


def test_cli_all_tasks(tmp_path):
    args = ["data", "game", "all", "--out", str(tmp_path), "--train-size", "3", "--val-size", "1",
            "--test-size", "1", "--quiet"]
    assert main(args) == 0
    for task in TASKS:
        assert json.loads((tmp_path / task / "manifest.json").read_text())["files"] == 5


def test_exported_splits_are_the_images_a_generated_task_run_uses(tmp_path, monkeypatch):
    """`foldcnn data game T --data-seed S` writes exactly what `foldcnn train --task T --data-seed S`
    trains, validates and tests on: the two derive their split seeds the same way."""
    from foldcnn.train.sources import DataSpec, load_splits

    monkeypatch.chdir(tmp_path)
    assert main(ARGS) == 0  # sot-timer, seed 5, 40/12/9 images
    splits = load_splits(DataSpec(task="sot-timer", train_size=40, val_size=12, test_size=9, seed=5))
    classes = game_task_classes("sot-timer")
    for split in SPLITS:
        ds = getattr(splits, split)
        for i, (img, lab) in enumerate(zip(ds.images.numpy(), ds.labels.numpy())):
            png = Image.open(tmp_path / "ds" / split / classes[lab] / f"{i:06d}.png")
            assert np.array_equal(np.asarray(png).transpose(2, 0, 1), img)
    with pytest.raises(ValueError, match="split must be one of"):
        split_seed(0, "holdout")


def test_a_generated_task_run_takes_the_same_other_share_as_data_game(tmp_path):
    """`foldcnn train --task T --other-share S` trains on what `foldcnn data game T --other-share S` writes;
    the option is refused where it cannot apply."""
    from foldcnn.train.sources import DataSpec, load_splits

    out = tmp_path / "ds"
    assert main(["data", "game", "sot-timer", "--out", str(out), "--train-size", "30", "--val-size", "10",
                 "--test-size", "10", "--data-seed", "2", "--other-share", "0.3", "--quiet"]) == 0
    splits = load_splits(DataSpec(task="sot-timer", train_size=30, val_size=10, test_size=10, seed=2, other_share=0.3))
    assert splits.meta["other_share"] == 0.3 and int((splits.train.labels == 26).sum()) == 9
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["class_counts"][OTHER] == 9
    ds = splits.test
    for i, (img, lab) in enumerate(zip(ds.images.numpy(), ds.labels.numpy())):
        png = Image.open(out / "test" / game_task_classes("sot-timer")[lab] / f"{i:06d}.png")
        assert np.array_equal(np.asarray(png).transpose(2, 0, 1), img)
    with pytest.raises(ValueError, match="generated task"):
        DataSpec(data_dir=str(out), other_share=0.1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        DataSpec(task="sot-timer", other_share=2.0)
