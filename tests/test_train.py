import json

import pytest
import torch

from foldcnn import create_model
from foldcnn.data.base import ArrayDataset
from foldcnn.train.checkpoint import load_checkpoint
from foldcnn.train.config import TrainConfig
from foldcnn.train.loop import evaluate, predict_logits, train_model
from foldcnn.train.metrics import classification_metrics


def easy_dataset(n: int, seed: int, size=(16, 16)) -> ArrayDataset:
    """3 classes told apart by which colour channel is bright: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 3, *size), generator=g, dtype=torch.uint8)
    images[torch.arange(n), labels] += 150
    return ArrayDataset(images, labels, ["r", "g", "b"])


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
    assert result.best_val_top1 > 0.6  # chance is 1/3; folded models learn slower (DESIGN 5)
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


def test_shape_mismatch_is_caught_before_training():
    model = create_model("lol-gold-fraction", num_classes=3, input_size=(20, 20))
    with pytest.raises(ValueError, match=r"input_size=\(16, 16\)"):
        train_model(model, easy_dataset(30, 0), easy_dataset(30, 1), TrainConfig(epochs=1), progress=False)


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lamb")
    assert TrainConfig(batch_size=30).images_per_step(4) == 28
    assert TrainConfig(batch_size=2).images_per_step(4) == 4


def test_cli_train_on_generated_task_and_eval(tmp_path, capsys):
    from foldcnn.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--task", "sot-coin-count", "--fold", "2", "--out", str(out), "--train-size", "120",
               "--val-size", "40", "--test-size", "40", "--epochs", "1", "--quiet"])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["fold"] == 2 and run["test_metrics"]["images"] == 40
    ck = load_checkpoint(out / "checkpoint")
    assert ck.model.fold == 2 and ck.class_names[-1] == "other"
    assert "test top-1" in capsys.readouterr().out


def test_cli_unknown_model_fails_fast(capsys):
    from foldcnn.cli import main

    assert main(["train", "--task", "sot-coin-count", "--model", "nope", "--out", "/tmp/x-never"]) == 1
    assert "unknown model" in capsys.readouterr().err
