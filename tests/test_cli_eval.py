"""foldcnn eval: the answers foldcnn predict gives on the same ordered files, plus regroupings."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_data import easy_dataset

from foldcnn.checkpoints import save_checkpoint
from foldcnn.cli import main
from foldcnn.models import create_model


@pytest.fixture(scope="module")
def folder_and_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    ds = easy_dataset(14, seed=3, size=(16, 16))
    for i, (img, lab) in enumerate(zip(ds.images, ds.labels.tolist())):
        d = root / "data" / ds.classes[lab]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i:02d}.png")
    torch.manual_seed(0)
    model = create_model("sot-coin-count", fold=2, num_classes=3, input_size=(16, 16))
    ck = save_checkpoint(root / "ck", model, ds.classes)
    return root / "data", ck


def test_eval_agrees_with_predict_on_the_same_ordered_files(folder_and_checkpoint, tmp_path, capsys):
    data, ck = folder_and_checkpoint
    assert main(["eval", str(ck), "--data", str(data), "--json", str(tmp_path / "m.json"), "--regroupings", "3"]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["images"] == 14 and m["regrouping"]["regroupings"] == 3
    assert m["regrouping"]["top1_input_order"] == pytest.approx(m["top1"], abs=1e-5)
    # predict over the same files in the same (sorted) order gives the same answers
    files = sorted(data.rglob("*.png"))
    listing = tmp_path / "files"
    listing.mkdir()
    for i, f in enumerate(files):  # one flat folder whose order is eval's order
        (listing / f"{i:02d}_{f.parent.name}.png").write_bytes(f.read_bytes())
    assert main(["predict", str(ck), "--input", str(listing), "--out", str(tmp_path / "p.csv"), "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    truth = [r["source"].rsplit("_", 1)[1].removesuffix(".png") for r in rows]
    top1 = np.mean([r["class_name"] == t for r, t in zip(rows, truth)])
    assert top1 == pytest.approx(m["top1"], abs=1e-5)
    out = capsys.readouterr().out
    assert "folds in input order" in out and "regrouped 3 times" in out


def test_eval_json_to_stdout_and_bad_options(folder_and_checkpoint, capsys):
    data, ck = folder_and_checkpoint
    assert main(["eval", str(ck), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 14
    assert main(["eval", str(ck), "--data", str(data), "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("foldcnn eval: error: --batch-size") and err.count("\n") == 1


def test_eval_honours_on_error(folder_and_checkpoint, tmp_path, capsys):
    """An unreadable image stops eval by default (on_error=raise, as predict); --on-error skip lists it."""
    import shutil

    data, ck = folder_and_checkpoint
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    bad = next(copy.iterdir()) / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    assert main(["eval", str(ck), "--data", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zz_broken.png" in err
    assert main(["eval", str(ck), "--data", str(copy), "--on-error", "skip", "--json", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["images"] == 14 and m["skipped"] == 1 and m["skipped_images"][0]["path"].endswith("zz_broken.png")
    assert "zz_broken.png" in capsys.readouterr().out
