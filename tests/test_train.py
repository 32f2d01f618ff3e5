import json
import math

import pytest
import torch

from foldcnn import create_model
from foldcnn.checkpoints import load_checkpoint
from foldcnn.train.config import TrainConfig, min_steps_for, recommended_budget
from foldcnn.train.loop import evaluate, predict_logits, train_model
from foldcnn.train.metrics import classification_metrics
from tiny_data import easy_dataset, write_folder


@pytest.mark.parametrize("fold", [1, 2, 4])
def test_training_learns_and_keeps_best_epoch(fold, tmp_path):
    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=fold, num_classes=3, input_size=(16, 16))
    train, val = easy_dataset(301, 0), easy_dataset(97, 1)  # counts not multiples of fold
    cfg = TrainConfig(epochs=8, batch_size=32, lr=3e-3)
    result = train_model(model, train, val, cfg, out_dir=tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    assert result.best_val_top1 == max(r["val_top1"] for r in rows)
    assert result.best_val_top1 > 0.6  # chance is 1/3; folded models learn slower (docs/design.md, "Training recipe")
    # The model holds the best epoch's weights.
    assert evaluate(model, val)["top1"] == pytest.approx(result.best_val_top1)


def test_predict_logits_order_and_padding_independent_of_batch():
    torch.manual_seed(0)
    model = create_model("sot-coin-count", fold=3).eval()
    images = torch.randint(0, 255, (10, *model.input_shape), dtype=torch.uint8)
    a = predict_logits(model, images, batch_size=6)
    b = predict_logits(model, images, batch_size=1024)
    # Same fixed groups whatever the batch size: identical per-image logits, in input order.
    torch.testing.assert_close(a, b)
    assert a.shape == (10, model.num_classes)


def test_metrics():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    labels = torch.tensor([0, 1, 0, 2])
    m = classification_metrics(logits, labels, ["a", "b", "c"])
    assert m["top1"] == 0.75 and m["top5"] == 1.0
    assert m["per_class"] == {"a": 0.5, "b": 1.0, "c": 1.0}
    assert m["worst_confusions"] == [{"true": "a", "predicted": "b", "count": 1}]
    assert m["class_images"] == {"a": 2, "b": 1, "c": 1}


def test_weak_classes_are_those_far_below_top1_with_enough_images():
    from foldcnn.train.metrics import weak_classes

    # 'other' is 1 class in 10 and read at 50%: top-1 95% hides it
    labels = torch.arange(200) % 10
    logits = torch.nn.functional.one_hot(labels, 10).float()
    logits[torch.nonzero(labels == 9)[:10, 0]] = torch.nn.functional.one_hot(torch.tensor(0), 10).float()
    m = classification_metrics(logits, labels, [str(i) for i in range(9)] + ["other"])
    assert m["top1"] == 0.95 and weak_classes(m) == [{"class": "other", "top1": 0.5, "images": 20}]
    assert weak_classes(m, min_images=21) == []  # too few images of the class to call it weak
    assert weak_classes(m, points=46) == []  # 45 points below top-1 is not 46
    assert weak_classes({"top1": 0.9, "per_class": {"a": 0.1}}) == []  # older metrics: no class counts


def test_shape_mismatch_is_caught_before_training():
    model = create_model("lol-gold-fraction", num_classes=3, input_size=(20, 20))
    with pytest.raises(ValueError, match=r"input_size=\(16, 16\)"):
        train_model(model, easy_dataset(30, 0), easy_dataset(30, 1), TrainConfig(epochs=1), progress=False)


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lamb")
    assert TrainConfig(batch_size=30).images_per_step(4) == 28
    assert TrainConfig(batch_size=2).images_per_step(4) == 4


@pytest.mark.parametrize("fold, epochs, decay", [(1, 60, 1e-5), (2, 100, 1e-5), (3, 100, 0.05), (4, 200, 0.05),
                                                 (9, 200, 0.05)])
def test_cli_budget_defaults_by_fold(fold, epochs, decay, capsys):
    """Without --epochs / --weight-decay, `foldcnn train` uses the budget that matched the original
    at that fold (docs/accuracy.md); a flag given overrides only its own field."""
    from foldcnn.cli import build_parser
    from foldcnn.cli.train import _train_inputs

    base = ["train", "--task", "sot-coin-count", "--fold", str(fold), "--out", "/tmp/x-never"]
    _, _, cfg, _ = _train_inputs(build_parser().parse_args(base))
    assert (cfg.epochs, cfg.weight_decay) == (epochs, decay) == tuple(recommended_budget(fold).values())
    assert f"fold {fold}: {epochs} epochs" in capsys.readouterr().err
    _, _, cfg, _ = _train_inputs(build_parser().parse_args(base + ["--epochs", "3"]))
    assert (cfg.epochs, cfg.weight_decay) == (3, decay)
    assert capsys.readouterr().err.startswith(f"fold {fold}: weight decay {decay:g} (this fold's defaults")
    _, _, cfg, _ = _train_inputs(build_parser().parse_args(base + ["--weight-decay", "0.2", "--epochs", "3"]))
    assert (cfg.epochs, cfg.weight_decay) == (3, 0.2)
    assert "this fold's defaults" not in capsys.readouterr().err
    assert TrainConfig.for_fold(fold, lr=1e-3) == TrainConfig(epochs=epochs, weight_decay=decay, lr=1e-3,
                                                              min_steps=min_steps_for(fold))


def test_cli_train_on_generated_task_and_eval(tmp_path, capsys):
    from foldcnn.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--task", "sot-coin-count", "--fold", "2", "--out", str(out), "--train-size", "120",
               "--val-size", "40", "--test-size", "40", "--epochs", "1", "--ema", "0.99", "--quiet"])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["fold"] == 2 and run["test_metrics"]["images"] == 40
    assert run["train_config"]["ema_decay"] == 0.99
    r = run["test_regrouping"]  # fold 2: the test images regrouped 10 times by default
    assert r["images"] == 40 and r["regroupings"] == 10 and 0 <= r["flip_rate"] <= 1
    assert r["top1_min"] <= run["test_metrics"]["top1"] <= r["top1_max"]  # the table's grouping is one of them
    assert run["summary"]["test_flip_rate"] == r["flip_rate"]
    assert run["features"]["weight_average"]["decay"] == 0.99 and run["features"]["weight_average"]["updates"] > 0
    assert run["features"]["training_aids"]["slot_diagonal_init"] == {"on": False}  # zoo models: off by default
    assert run["features"]["slot_statistics_pooled"] > 0  # tied fold slots: BatchNorm statistics pooled
    ck = load_checkpoint(out / "checkpoint")
    assert ck.model.fold == 2 and ck.class_names[-1] == "other"
    assert "test top-1" in capsys.readouterr().out


def test_cli_unknown_model_fails_fast(capsys):
    from foldcnn.cli import main

    assert main(["train", "--task", "sot-coin-count", "--model", "nope", "--out", "/tmp/x-never"]) == 2
    assert "unknown model" in capsys.readouterr().err


# ------------------------------------------------------------------ bad input, data sources, manifest
def three_splits(classes=("a", "b", "c"), n=(12, 4, 4), size=(12, 12)):
    return {s: {c: [size] * k for c in classes} for s, k in zip(("train", "val", "test"), n)}


def test_folder_with_one_class_fails_before_reading(tmp_path, capsys):
    from foldcnn.cli import main

    root = write_folder(tmp_path / "d", three_splits(classes=("a",)))
    assert main(["train", "--data", str(root), "--model", "lol-gold-fraction", "--out", str(tmp_path / "r")]) == 2
    assert "only the class folder 'a'" in capsys.readouterr().err


def test_mixed_sizes_need_input_size_then_train_end_to_end(tmp_path, capsys):
    from foldcnn.cli import main

    layout = three_splits(classes=("a", "b", "c", "d"))
    layout["train"]["b"][3] = (14, 13)
    root = write_folder(tmp_path / "d", layout)
    args = ["train", "--data", str(root), "--model", "lol-gold-fraction", "--fold", "2", "--epochs", "1", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err
    assert "differ in size" in err and "--input-size HxW" in err
    assert main(args + ["--out", str(tmp_path / "r2"), "--input-size", "13x12"]) == 0
    ck = load_checkpoint(tmp_path / "r2" / "checkpoint")
    # Class count from the folder, size from the flag, whatever the model's own defaults are.
    assert ck.class_names == ["a", "b", "c", "d"] and ck.model.input_shape == (3, 13, 12) and ck.fold == 2


def test_existing_out_needs_resume_or_overwrite(tmp_path, capsys):
    from foldcnn.cli import main

    out = tmp_path / "r"
    args = ["train", "--task", "sot-coin-count", "--out", str(out), "--train-size", "24", "--val-size", "8",
            "--test-size", "8", "--epochs", "1", "--quiet"]
    assert main(args) == 0
    first = (out / "run.json").read_bytes()
    capsys.readouterr()
    assert main(args) == 2  # a finished run is never silently replaced
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty" in err[0] and "--resume" in err[0] and "--overwrite" in err[0]
    assert (out / "run.json").read_bytes() == first
    assert main(args + ["--resume", "--overwrite"]) == 2 and "exclude each other" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--seed", "5"]) == 0
    assert json.loads((out / "run.json").read_text())["seed"] == 5
    (tmp_path / "file").write_text("x")  # --out under a file: one sentence, nothing trained
    assert main(args[:4] + [str(tmp_path / "file" / "r")] + args[5:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "file") in err[0]


def test_unreadable_training_images_counted_listed_or_raised(tmp_path, capsys):
    from foldcnn.cli import main

    root = write_folder(tmp_path / "d", three_splits())
    (root / "train" / "a" / "empty.png").write_bytes(b"")
    (root / "val" / "b" / "junk.png").write_bytes(b"not a png")
    args = ["train", "--data", str(root), "--model", "lol-gold-fraction", "--epochs", "1", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image(s)" in err and "train/a/empty.png" in err
    data = json.loads((tmp_path / "r" / "run.json").read_text())["data"]
    assert data["n_skipped_images"] == 2
    assert [f["path"] for f in data["skipped_images"]] == ["train/a/empty.png", "val/b/junk.png"]
    assert main(args + ["--out", str(tmp_path / "r2"), "--on-error", "raise"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty.png" in err[0] and not (tmp_path / "r2" / "run.json").exists()


def test_val_class_missing_from_train_fails_before_reading(tmp_path, capsys):
    from foldcnn.cli import main

    layout = three_splits()
    layout["val"]["zz"] = [(12, 12)]
    root = write_folder(tmp_path / "d", layout)
    assert main(["train", "--data", str(root), "--model", "lol-gold-fraction", "--out", str(tmp_path / "r")]) == 2
    assert "train/ lacks: zz" in capsys.readouterr().err


def test_fold_larger_than_the_data(tmp_path, capsys):
    from foldcnn.cli import main

    root = write_folder(tmp_path / "d", three_splits(classes=("a", "b"), n=(1, 1, 1)))
    assert main(["train", "--data", str(root), "--model", "lol-gold-fraction", "--fold", "4",
                 "--out", str(tmp_path / "r")]) == 2
    assert "fold=4 is larger than the 2 training images" in capsys.readouterr().err
    model = create_model("lol-gold-fraction", fold=4, num_classes=3, input_size=(16, 16))
    with pytest.raises(ValueError, match="larger than the 3 training images"):
        train_model(model, easy_dataset(3, 0), easy_dataset(9, 1), TrainConfig(epochs=1), progress=False)


def test_task_with_input_size_is_refused(capsys):
    from foldcnn.cli import main

    assert main(["train", "--task", "sot-coin-count", "--input-size", "20x20", "--out", "/tmp/x-never"]) == 2
    assert "fixed size" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["video", "folder"])
def test_train_on_a_video_with_a_temporal_split(tmp_path, how):
    pytest.importorskip("av")
    from foldcnn.cli import main
    from foldcnn.data.video import generate_video

    made = generate_video(tmp_path / "v", 100, seed=0, size=(64, 48), progress=False)
    source = ["--video", str(made.video_path)] if how == "video" else ["--data", str(tmp_path / "v")]
    out = tmp_path / "run"
    assert main(["train", *source, "--model", "noscope-roundabout", "--fold", "2", "--epochs", "1",
                 "--batch-size", "16", "--out", str(out), "--quiet"]) == 0
    run = json.loads((out / "run.json").read_text())
    d = run["data"]
    assert d["source"] == "video" and d["splits"] == {"train": [0, 60], "val": [60, 80], "test": [80, 100]}
    assert len(d["video_sha256"]) == 64 and run["test_metrics"]["images"] == 20
    assert load_checkpoint(out / "checkpoint").model.input_shape == (3, 50, 50)  # NoScope's frame size


def test_video_whose_training_part_has_one_class(tmp_path, capsys):
    pytest.importorskip("av")
    from foldcnn.cli import main
    from foldcnn.data.video import generate_video

    made = generate_video(tmp_path / "v", 40, seed=0, size=(64, 48), progress=False)
    (tmp_path / "v" / "labels.csv").write_text("frame,label\n" + "".join(f"{i},{int(i > 30)}\n" for i in range(40)))
    assert main(["train", "--video", str(made.video_path), "--model", "noscope-roundabout",
                 "--out", str(tmp_path / "r")]) == 2
    assert "holds only class 'absent'" in capsys.readouterr().err


def test_run_manifest_records_how_the_run_was_made(tmp_path):
    from foldcnn.train.run import DataSpec, ModelSpec, RunOptions, run_training

    cfg = TrainConfig(epochs=2, batch_size=16, curriculum=True, seed=3)
    m = run_training(ModelSpec("sot-coin-count", fold=2),
                     DataSpec(task="sot-coin-count", train_size=64, val_size=16, test_size=16),
                     cfg, RunOptions(tmp_path, quiet=True, command=("foldcnn", "train", "...")))
    assert m["command"] == ["foldcnn", "train", "..."] and m["seed"] == 3
    assert {"python", "torch", "numpy", "foldcnn"} <= set(m["versions"])
    assert set(m["data_sha256"]) == {"train", "val", "test"} and all(len(h) == 64 for h in m["data_sha256"].values())
    f = m["features"]
    assert f["curriculum"]["active_classes"][-1] == 15 and f["distillation"] is None and f["resumed_from"] is None
    assert f["precision"] in ("bf16", "fp32") and f["distributed"] is None
    assert json.loads((tmp_path / "run.json").read_text()) == json.loads(json.dumps(m))
    assert (tmp_path / "train_state.pt").exists()
    # --seed seeds the initialization: the same run again gives the same weights.
    m2 = run_training(ModelSpec("sot-coin-count", fold=2),
                      DataSpec(task="sot-coin-count", train_size=64, val_size=16, test_size=16),
                      cfg, RunOptions(tmp_path / "again", quiet=True))
    assert m2["summary"]["test_top1"] == m["summary"]["test_top1"]
    a, b = (load_checkpoint(p / "checkpoint").model.state_dict() for p in (tmp_path, tmp_path / "again"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fold", [1, 2, 3, 4])
@pytest.mark.parametrize("train_images", [8000, 20000, 40000])
def test_budget_keeps_the_accuracy_tables_epochs_on_its_data_sizes(fold, train_images):
    """The game tasks of docs/accuracy.md train on 8,000-40,000 images: the step floor leaves their
    budget exactly as it was (same epochs, no plateau stopping), so the table does not move."""
    from foldcnn.train.config import fit_budget

    cfg = TrainConfig.for_fold(fold)
    fitted, info = fit_budget(cfg, train_images, fold)
    assert fitted == cfg and fitted.epochs == recommended_budget(fold)["epochs"] and fitted.plateau_patience == 0
    assert not info["extended"] and info["steps"] >= cfg.min_steps > 0


@pytest.mark.parametrize("fold", [1, 4])
def test_budget_gives_small_sets_the_floor_of_steps_and_plateau_stopping(fold):
    from foldcnn.train.config import FLOOR_IMAGES, fit_budget, min_steps_for

    cfg = TrainConfig.for_fold(fold)
    assert cfg.min_steps == min_steps_for(fold) == recommended_budget(fold)["epochs"] * math.ceil(FLOOR_IMAGES / 64)
    fitted, info = fit_budget(cfg, 1078, fold)  # sklearn's digits, 60% for training
    per_epoch = math.ceil(math.ceil(1078 / fold) / (64 // fold))
    assert info["extended"] and info["steps_per_epoch"] == per_epoch
    assert fitted.epochs == math.ceil(cfg.min_steps / per_epoch) > cfg.epochs
    assert (fitted.epochs - 1) * per_epoch < cfg.min_steps <= fitted.epochs * per_epoch
    assert fitted.plateau_patience == max(10, round(0.1 * fitted.epochs))
    # an explicit epoch count is a budget the user chose: no floor, no plateau stopping
    explicit = TrainConfig.for_fold(fold, epochs=5)
    assert explicit.min_steps == 0 and fit_budget(explicit, 1078, fold)[0] == explicit


def test_plateau_counts_epochs_since_the_smoothed_best():
    from foldcnn.train.loop import plateau_epochs, smoothed

    assert smoothed([0.0, 0.3, 0.6, 0.9]) == pytest.approx([0.0, 0.15, 0.3, 0.6])
    assert plateau_epochs([0.1, 0.2, 0.3, 0.4]) == 0  # still rising
    assert plateau_epochs([0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]) == 3  # the 3-epoch mean peaked at epoch 4
    assert plateau_epochs([0.1, 0.2, 0.9, 0.2, 0.2, 0.2, 0.2]) == 3  # means .4, .43, .43: the first best counts
    assert plateau_epochs([]) == 0


def test_plateau_stopping_ends_a_run_that_stopped_learning_and_keeps_the_best_weights(tmp_path):
    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(16, 16))
    train, val = easy_dataset(64, 0), easy_dataset(30, 1)
    cfg = TrainConfig(epochs=40, batch_size=32, plateau_patience=4, precision="fp32", threads=1)
    result = train_model(model, train, val, cfg, out_dir=tmp_path, progress=False)
    vals = [r["val_top1"] for r in result.history]
    assert result.features["early_stopped"] and 30 <= len(vals) < 40  # judged from 3/4 of the epochs on
    from foldcnn.train.loop import plateau_epochs

    assert plateau_epochs(vals) >= 4 and all(plateau_epochs(vals[:i]) < 4 for i in range(30, len(vals)))
    assert evaluate(model, val)["top1"] == pytest.approx(result.best_val_top1) == max(vals)


def test_still_improving_needs_a_rise_of_two_validation_images_at_least():
    from foldcnn.train.run import still_improving

    rising = [{"val_top1": v} for v in (0.5, 0.6, 0.7, 0.8, 0.9)]
    assert still_improving(rising, 1000) == {"yes": True, "val_top1_gain_points": 25.0, "over_epochs": 3}
    one_image = [{"val_top1": v} for v in [0.9] * 37 + [0.9056] * 3]  # 1 of 180 images, 0.56 points
    assert still_improving(one_image, 180)["yes"] is False and still_improving(one_image, 10000)["yes"] is True
    assert still_improving(rising[:1], 1000) is None


def test_cli_train_width_mult_builds_a_narrower_cnn_and_refuses_a_bad_one(tmp_path, capsys):
    from foldcnn.cli import main

    out = tmp_path / "run"
    assert main(["train", "--task", "apex-squad-count", "--width-mult", "0.5", "--out", str(out), "--train-size", "40",
                 "--val-size", "20", "--test-size", "20", "--epochs", "1", "--quiet"]) == 0
    ck = load_checkpoint(out / "checkpoint")
    assert ck.model.config.width_mult == 0.5 and ck.model.fold == 1
    assert json.loads((out / "run.json").read_text())["model_config"]["width_mult"] == 0.5
    for bad, says in (("0", "positive numbers"), ("0.001", "0 channels wide")):
        assert main(["train", "--task", "apex-squad-count", "--width-mult", bad, "--out", str(tmp_path / bad),
                     "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1
