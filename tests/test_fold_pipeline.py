"""`foldcnn fold`: the worked example end to end on tiny data (the CI run of examples/), resume,
and every bad input as one sentence, exit 2 and no checkpoint that looks complete."""

import json
from pathlib import Path

import pytest
import torch

from foldcnn.checkpoints import load_checkpoint
from foldcnn.workflows.fold import FoldOptions
from foldcnn.train.config import TrainConfig
from foldcnn.train.sources import DataSpec
from tiny_data import USER_CNNS, write_folder, write_user_module

REPO = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--original-epochs", "1", "--backends", "eager/fp32", "--batch-sizes", "8",
        "--trials", "1", "--min-seconds", "0.01", "--threads", "1", "--batch-size", "8"]


def _data(tmp_path, classes="abc", n=8, size=(12, 12)):
    return write_folder(tmp_path / "d", {".": {c: [size] * n for c in classes}})


def test_example_cnn_end_to_end_then_resume(tmp_path, monkeypatch, capsys):
    """README "Fold your own CNN" on a generated image folder, with a tiny budget."""
    from foldcnn.cli import main

    monkeypatch.chdir(REPO)  # examples/ is importable from the repository root, as in the README
    data, out = _data(tmp_path), tmp_path / "out"
    args = ["fold", "examples.my_cnn:MyCNN", "--data", str(data), "--out", str(out), "--folds", "2", *TINY]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    o, (f2,), c = report["original"], report["folded"], report["chosen"]
    assert {"checkpoint", "top1", "images_per_s", "engine"} <= set(o) and 0 <= o["top1"] <= 1
    assert f2["fold"] == 2 and 0 <= f2["top1"] <= 1 and f2["images_per_s"] > 0 and report["max_accuracy_drop"] == 1.0
    assert c["fold"] in (1, 2) and Path(c["onnx"]).is_file() and Path(c["onnx"] + ".json").is_file()
    ck = load_checkpoint(f2["checkpoint"])
    assert ck.model.fold == 2 and ck.class_names == ["a", "b", "c"]
    assert "foldcnn predict" in (out / "report.md").read_text()
    peer = report["best_narrower_peer"]  # timed beside them, named in the report, never chosen without --search
    assert peer["fold"] == 1 and peer["width_mult"] < 1 and not peer["trained"] and peer["images_per_s"] > 0
    assert "Best narrower peer" in (out / "report.md").read_text()
    run = json.loads((out / "fold2" / "run.json").read_text())
    assert run["features"]["distillation"]["teacher"].endswith("original/checkpoint")
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0  # finished stages are reused, not retrained
    assert capsys.readouterr().err.count("done earlier") == 2
    assert json.loads((out / "report.json").read_text())["folded"][0]["top1"] == f2["top1"]
    assert main(args) == 2 and "--resume" in capsys.readouterr().err  # an existing run is never overwritten


@pytest.fixture
def bad_module(tmp_path, monkeypatch):
    import torch

    from foldcnn.models.imported import build_original

    name = write_user_module(tmp_path, monkeypatch, USER_CNNS, "bad_cnn")
    # weights of another architecture: a narrower conv
    torch.save(build_original(f"{name}:Net", {"num_classes": 3, "width": 4}).state_dict(), tmp_path / "small.pt")
    return name


@pytest.mark.parametrize("model, extra, match", [
    ("nowhere_pkg_z.mod:Net", [], "cannot import module 'nowhere_pkg_z.mod'"),
    ("{m}:raises", [], "raised RuntimeError: bad builder"),
    ("{m}:not_a_module", [], "returned a int, not an nn.Module"),
    ("{m}:Broken", [], "layer 'fc' (Linear): the original model fails on the given input_shape"),
    ("{m}:Grouped", [], "layer 'conv' (Conv2d): grouped convolution"),
    ("{m}:Net", ["--weights", "small.pt"], "do not fit this architecture"),
    ("{m}:Net", ["--folds", "0"], "folds must be ints >= 2"),
    ("{m}:Net", ["--folds", "2,-1"], "folds must be ints >= 2"),
    ("{m}:Net", ["--one-class"], "only the class folder 'a'"),
    ("{m}:Net", ["--no-images"], "hold no images"),
])
def test_bad_input_is_one_sentence_exit_2_and_no_complete_checkpoint(tmp_path, capsys, bad_module, model, extra,
                                                                     match):
    from foldcnn.cli import main

    classes = "a" if "--one-class" in extra else "abc"
    data = _data(tmp_path, classes, n=0 if "--no-images" in extra else 6)
    for c in classes:
        (data / c).mkdir(parents=True, exist_ok=True)
    extra = [e for e in extra if e not in ("--one-class", "--no-images")]
    out = tmp_path / "out"
    argv = ["fold", model.format(m=bad_module), "--data", str(data), "--out", str(out), *TINY, "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1 and err.startswith("foldcnn fold: error:"), err
    assert not list(out.rglob("config.json")) and not (out / "report.json").exists()


def test_options_are_validated():
    data = DataSpec(data_dir="x")
    with pytest.raises(ValueError, match="folds must be ints >= 2"):
        FoldOptions("m:N", data, folds=(1,))
    with pytest.raises(ValueError, match="points"):
        FoldOptions("m:N", data, max_accuracy_drop=-1)
    assert FoldOptions("m:N", data, folds=(4, 2, 4)).folds == (2, 4)
    opts = FoldOptions("m:N", data, train=TrainConfig(cross_slot_decay=float("inf"), distill="kl", lr=1e-3))
    assert opts.train_config(4, teacher=True).cross_slot_decay == float("inf")
    assert opts.train_config(1, teacher=False).cross_slot_decay == 0.0  # the original has no fold slots
    with pytest.raises(ValueError, match="cross_slot_decay"):
        FoldOptions("m:N", data, train=TrainConfig(cross_slot_decay=-1))
    # The recipe is the given TrainConfig with each stage's budget by fold unless epochs are given.
    assert opts.train_config(4, teacher=True) == TrainConfig.for_fold(4, cross_slot_decay=float("inf"),
                                                                       distill="kl", lr=1e-3)
    assert opts.train_config(1, teacher=False) == TrainConfig.for_fold(1, lr=1e-3)
    pinned = FoldOptions("m:N", data, epochs=7, original_epochs=3, weight_decay=0.1)
    assert (pinned.train_config(4, True).epochs, pinned.train_config(1, False).epochs) == (7, 3)
    assert pinned.train_config(4, True).weight_decay == pinned.train_config(1, False).weight_decay == 0.1


def test_advice_names_what_the_folded_run_measured_about_itself():
    from foldcnn.workflows.fold.pipeline import _choose

    opts = FoldOptions(model="lol-gold-fraction", data=DataSpec(task="sot-coin-count"))
    original = {"fold": 1, "top1": 0.95, "images_per_s": 100.0}
    row = {"fold": 4, "top1": 0.90, "images_per_s": 300.0, "epochs_run": 200, "best_epoch": 199,
           "still_improving": {"yes": True, "val_top1_gain_points": 2.5, "over_epochs": 20}}
    chosen, why = _choose(opts, [row], original)
    assert chosen is None and "still improving" in why and "+2.5 points" in why and "--epochs 400" in why
    row.update(still_improving={"yes": False, "val_top1_gain_points": 0.0, "over_epochs": 20}, best_epoch=80)
    why = _choose(opts, [row], original)[1]
    assert "had stopped improving (best val at epoch 80 of 200)" in why and "--epochs" not in why


def test_report_names_the_classes_a_model_reads_far_worse_than_its_top1():
    from foldcnn.workflows.fold.report import weak_class_lines

    rows = [("original", {"weak_classes": []}),
            ("fold 4", {"weak_classes": [{"class": "other", "top1": 0.5833, "images": 36}]})]
    lines = weak_class_lines(rows)
    assert lines[-1] == "- fold 4: `other` 58.3% of 36." and len(lines) == 2 and "10 points below" in lines[0]
    assert weak_class_lines([("original", {})]) == []


def test_precision_restricts_the_engines_timed():
    from foldcnn.workflows.fold.stages import restrict_precisions

    pairs = (("ort", "fp32"), ("ort", "int8"), ("openvino", "int8"))
    assert restrict_precisions(pairs, ("fp32",)) == (("ort", "fp32"),)
    assert restrict_precisions(pairs, None) == pairs
    with pytest.raises(ValueError, match="no engine to time at precision bf16"):
        restrict_precisions(pairs, ("bf16",))
    with pytest.raises(ValueError, match="precisions must be among"):
        FoldOptions("m:N", DataSpec(data_dir="x"), precisions=("fp64",))


def _engines(*pairs):
    return [{"engine": e, "backend": e.split("/")[0], "precision": e.split("/")[1], "batch_size": 64,
             "images_per_s": s, "images_per_s_min": s, "images_per_s_max": s} for e, s in pairs]


def test_a_lower_precision_stands_only_where_it_answers_as_fp32(monkeypatch):
    """settle_precision keeps the fastest engine whose classes agree with fp32 on >= 99% of the
    validation images: int8 at 95% gives way to the next engine, fp32 needs no check."""
    import foldcnn.backends.agreement as agreement
    import foldcnn.checkpoints as checkpoints
    from foldcnn.workflows.fold.stages import settle_precision

    said, asked = [], []
    monkeypatch.setattr(checkpoints, "load_checkpoint", lambda path: type("C", (), {"model": torch.nn.Identity()}))

    def fake(model, images, backend, precision, **kw):
        asked.append(f"{backend}/{precision}")
        return {"openvino/int8": 0.95, "openvino/bf16": 0.995}[f"{backend}/{precision}"]

    monkeypatch.setattr(agreement, "engine_agreement", fake)
    row = {"fold": 4, **_engines(("openvino/int8", 900.0))[0],
           "engines": _engines(("openvino/int8", 900.0), ("openvino/bf16", 700.0), ("ort/fp32", 500.0))}
    settle_precision(row, "ck", torch.zeros(4, 3, 8, 8, dtype=torch.uint8), 1, said.append)
    assert row["engine"] == "openvino/bf16" and row["images_per_s"] == 700.0 and row["precision"] == "bf16"
    assert row["agreement_checks"] == [{"engine": "openvino/int8", "agreement": 0.95},
                                       {"engine": "openvino/bf16", "agreement": 0.995}]
    assert asked == ["openvino/int8", "openvino/bf16"] and "95.0%" in said[0] and "openvino/bf16" in said[0]
    fp32 = {"fold": 1, **_engines(("ort/fp32", 500.0))[0], "engines": _engines(("ort/fp32", 500.0))}
    settle_precision(fp32, "ck", None, 1, said.append)  # fp32: nothing to check, nothing loaded
    assert fp32["engine"] == "ort/fp32" and fp32["agreement_checks"] == [{"engine": "ort/fp32", "agreement": 1.0}]
    assert asked == ["openvino/int8", "openvino/bf16"]
