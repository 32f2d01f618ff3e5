import json

import pytest
import torch

from foldcnn import create_model
from foldcnn.checkpoints import CheckpointError, load_checkpoint, save_checkpoint


def _ckpt(tmp_path, **kw):
    model = create_model("sot-coin-count", fold=2, **kw)
    names = [f"c{i}" for i in range(model.num_classes)]
    return model, save_checkpoint(tmp_path / "ck", model, names, metrics={"test_acc": 0.5})


def test_round_trip_rebuilds_model_and_outputs(tmp_path):
    model, path = _ckpt(tmp_path, num_classes=4, input_size=(20, 30))
    ck = load_checkpoint(path)
    assert ck.model.fold == 2 and ck.model.input_shape == (3, 20, 30) and ck.model.num_classes == 4
    assert ck.class_names == ["c0", "c1", "c2", "c3"] and ck.metrics == {"test_acc": 0.5}
    x = torch.rand(3, 6, 20, 30)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(ck.model(x), model(x))


def test_missing_and_foreign_directories(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a foldcnn checkpoint"):
        load_checkpoint(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"hidden_size": 3}))
    with pytest.raises(CheckpointError, match="not written by foldcnn"):
        load_checkpoint(tmp_path / "other")


def test_truncated_weights(tmp_path):
    _, path = _ckpt(tmp_path)
    w = path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_checkpoint(path)


def test_weights_of_another_architecture(tmp_path):
    _, path = _ckpt(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"]["fold"] = 4  # config now describes another fold than the weights
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not fit this architecture"):
        load_checkpoint(path)


def test_damaged_config(tmp_path):
    _, path = _ckpt(tmp_path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


def test_class_names_must_match(tmp_path):
    model = create_model("sot-coin-count")
    with pytest.raises(CheckpointError, match="class names"):
        save_checkpoint(tmp_path / "x", model, ["a", "b"])


def test_calibration_images_round_trip(tmp_path):
    from foldcnn.checkpoints import load_calibration

    model = create_model("sot-coin-count", fold=2)
    images = torch.randint(0, 256, (5, *model.input_shape), dtype=torch.uint8)
    save_checkpoint(tmp_path / "ck", model, [str(i) for i in range(model.num_classes)], calibration_images=images)
    assert torch.equal(load_calibration(tmp_path / "ck"), images)
    save_checkpoint(tmp_path / "plain", model, [str(i) for i in range(model.num_classes)])
    assert load_calibration(tmp_path / "plain") is None
    with pytest.raises(CheckpointError, match="uint8"):
        save_checkpoint(tmp_path / "bad", model, [str(i) for i in range(model.num_classes)],
                        calibration_images=images.float())
