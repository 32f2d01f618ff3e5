"""`foldcnn extract`: the slot CNN of a folded model whose slots never mix gives every image the
same logits; a model with weights between slots (or slots that differ) is refused in one sentence."""

import pytest
import torch

from foldcnn.errors import UsageError
from foldcnn.models import create_model
from foldcnn.train.symmetry import shrink_cross_slot_, tie_fold_slots_, untie_fold_slots_
from foldcnn.workflows.extract import extract_slot_cnn


def _separable(name="apex-squad-count", fold=4, **kw):
    torch.manual_seed(0)
    m = create_model(name, fold=fold, **kw)
    tie_fold_slots_(m, fold)
    shrink_cross_slot_(m, 0.0)  # what --cross-slot-decay inf holds
    untie_fold_slots_(m)
    return m.eval()


@pytest.mark.parametrize("fold, kw", [(4, {}), (2, {}), (4, {"channel_multiple": 32}), (4, {"width_mult": 1.0})])
def test_slot_cnn_gives_every_image_the_same_logits(fold, kw):
    folded = _separable(fold=fold, **kw)
    slot = extract_slot_cnn(folded)
    assert slot.fold == 1 and sum(p.numel() for p in slot.parameters()) < sum(p.numel() for p in folded.parameters())
    x = torch.rand(10, *folded.input_shape)  # not a multiple of the fold: padding never changes real outputs
    with torch.no_grad():
        torch.testing.assert_close(slot.classify(x), folded.classify(x), atol=1e-5, rtol=1e-5)


def test_cross_slot_weights_and_unlike_slots_are_refused():
    with pytest.raises(UsageError, match="weights between fold slots"):
        extract_slot_cnn(create_model("apex-squad-count", fold=4).eval())
    m = _separable()
    with torch.no_grad():
        go = m.features[0].weight.shape[0] // 4
        m.features[0].weight[go:2 * go, 3:6] += 1.0  # slot 1's own block differs from slot 0's
    with pytest.raises(UsageError, match="other weights than slot 0"):
        extract_slot_cnn(m)
    with pytest.raises(UsageError, match="not folded"):
        extract_slot_cnn(create_model("apex-squad-count"))


def test_cli_extract_from_a_model_trained_with_cross_slot_decay_inf(tmp_path, capsys):
    from foldcnn.checkpoints import load_checkpoint
    from foldcnn.cli import main

    run = tmp_path / "run"
    assert main(["train", "--task", "apex-squad-count", "--fold", "4", "--cross-slot-decay", "inf", "--out", str(run),
                 "--train-size", "48", "--val-size", "16", "--test-size", "16", "--epochs", "1", "--quiet",
                 "--batch-size", "16"]) == 0
    assert main(["extract", str(run / "checkpoint"), "--out", str(tmp_path / "slot")]) == 0
    assert "fold-1 slot CNN of a fold-4 model" in capsys.readouterr().out
    folded, slot = load_checkpoint(run / "checkpoint"), load_checkpoint(tmp_path / "slot")
    assert slot.model.fold == 1 and slot.class_names == folded.class_names
    x = torch.rand(12, *folded.model.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(slot.model.classify(x), folded.model.classify(x), atol=1e-5, rtol=1e-5)
    plain = tmp_path / "plain"
    assert main(["train", "--task", "apex-squad-count", "--fold", "4", "--out", str(plain), "--train-size", "48",
                 "--val-size", "16", "--test-size", "16", "--epochs", "1", "--quiet", "--batch-size", "16"]) == 0
    capsys.readouterr()
    assert main(["extract", str(plain / "checkpoint"), "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--cross-slot-decay inf" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "no" / "config.json").exists()


@pytest.mark.parametrize("cm", [8, 32])
def test_slot_cnn_of_a_users_cnn(cm, monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))  # examples/ as in the README
    folded = _separable("examples.my_cnn:MyCNN", channel_multiple=cm, input_shape=(3, 17, 40), num_classes=5)
    slot = extract_slot_cnn(folded)
    assert slot.fold == 1 and slot.config.name == "examples.my_cnn:MyCNN"
    x = torch.rand(6, 3, 17, 40)
    with torch.no_grad():
        torch.testing.assert_close(slot.classify(x), folded.classify(x), atol=1e-5, rtol=1e-5)
