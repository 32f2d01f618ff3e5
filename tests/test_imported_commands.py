"""A checkpoint of a user's folded CNN works wherever a zoo checkpoint does: eval, export (ONNX fp32
and int8), predict, Predictor, tune, serve, and loading from another directory (import_root)."""

import csv
import importlib.util
import json
import sys

import pytest
import torch

from foldcnn.checkpoints import load_checkpoint, save_checkpoint
from foldcnn.models import create_model
from tiny_data import USER_CNNS, write_folder, write_user_module

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


@pytest.fixture
def setup(tmp_path, monkeypatch):
    name = write_user_module(tmp_path, monkeypatch, USER_CNNS, "cmd_cnn")
    data = write_folder(tmp_path / "d", {".": {c: [(8, 8)] * 4 for c in "abc"}})
    model = create_model(f"{name}:Net", fold=2, num_classes=3, input_shape=(3, 8, 8)).eval()
    cal = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    ck = save_checkpoint(tmp_path / "ck", model, ["a", "b", "c"], calibration_images=cal)
    return {"name": name, "data": data, "ck": ck, "model": model}


def test_eval_predict_and_predictor(setup, tmp_path, capsys):
    from foldcnn.cli import main
    from foldcnn.infer import Predictor

    assert main(["eval", str(setup["ck"]), "--data", str(setup["data"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 12
    out = tmp_path / "p.csv"
    assert main(["predict", str(setup["ck"]), "--input", str(setup["data"] / "a"), "--out", str(out),
                 "--workers", "0"]) == 0
    rows = list(csv.DictReader(out.open()))
    preds = Predictor.from_checkpoint(setup["ck"], workers=0).predict(sorted((setup["data"] / "a").glob("*.png")))
    assert [int(r["class_index"]) for r in rows] == [p.class_index for p in preds] and len(rows) == 4


@pytest.mark.skipif(not HAS_ORT, reason="needs onnx and onnxruntime")
@pytest.mark.parametrize("int8", [False, True])
def test_export_fp32_and_int8(setup, tmp_path, int8):
    from foldcnn.cli import main

    out = tmp_path / "m.onnx"
    assert main(["export", str(setup["ck"]), "--out", str(out), *(["--precision", "int8"] if int8 else [])]) == 0
    assert out.is_file() and json.loads(out.with_name("m.onnx.json").read_text())["fold"] == 2


def test_tune_with_the_checkpoint(setup):
    from foldcnn.bench.tune import tune

    res = tune(checkpoint=str(setup["ck"]), folds=(1, 2), batch_sizes=(8,), backends=[("eager", "fp32")],
               seconds=3, trials=1)
    assert res.model == f"{setup['name']}:Net" and {r["fold"] for r in res.ranking} == {1, 2}


def test_serve_answers_with_the_user_model(setup):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from test_serve import asgi, png

    from foldcnn.infer import Predictor
    from foldcnn.serve import ServeConfig, create_app

    app = create_app(Predictor.from_checkpoint(setup["ck"], workers=0), ServeConfig(max_wait_ms=1))
    r = asgi(app, lambda c: c.post("/v1/classify", content=png((200, 10, 10)), headers={"Content-Type": "image/png"}))
    assert r.status_code == 200 and r.json()["results"][0]["class_name"] in ("a", "b", "c")


def test_loads_from_another_directory_through_import_root(setup, tmp_path, monkeypatch):
    cfg = json.loads((setup["ck"] / "config.json").read_text())
    assert cfg["import_root"] == str(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in (str(tmp_path), "")])
    monkeypatch.delitem(sys.modules, setup["name"])
    ck = load_checkpoint(setup["ck"])
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ck.model.classify(x), setup["model"].classify(x))
