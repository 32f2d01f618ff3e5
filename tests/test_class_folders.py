"""Data as users have it: one folder of class folders, split seeded and stratified; `foldcnn train`
with a CNN by import path, --model-kwargs and --weights, and the training aids' run.json record."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foldcnn.checkpoints import load_checkpoint
from foldcnn.data.splits import stratified_split
from foldcnn.train.sources import DataSpec, load_splits
from tiny_data import USER_CNNS, write_folder, write_user_module


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=6, max_size=80), st.integers(0, 9))
def test_stratified_split_partitions_every_class_and_is_seeded(labels, seed):
    labels = torch.tensor(labels)
    try:
        parts = stratified_split(labels, (0.6, 0.2, 0.2), seed=seed)
    except ValueError as e:
        assert "too few" in str(e)
        return
    allidx = torch.cat(list(parts.values())).sort().values
    assert torch.equal(allidx, torch.arange(len(labels)))  # every image once
    for c in labels.unique():  # each class split near its fractions
        n = int((labels == c).sum())
        got = int((labels[parts["train"]] == c).sum())
        k = len(labels.unique())
        assert got >= 1 or len(parts["train"]) < k  # every class trains when there is room
        assert abs(got - 0.6 * n) <= 1 + 0.6 * k / len(labels) * n
    again = stratified_split(labels, (0.6, 0.2, 0.2), seed=seed)
    assert all(torch.equal(parts[k], again[k]) for k in parts)


def _unsplit(tmp_path, classes=("a", "b", "c"), n=10, size=(12, 12)):
    return write_folder(tmp_path / "d", {".": {c: [size] * n for c in classes}})


def test_class_folders_split_recorded_and_mixed_sizes_resized_to_the_most_common(tmp_path):
    layout = {".": {"a": [(12, 12)] * 10, "b": [(12, 12)] * 8 + [(9, 14)] * 2}}
    root = write_folder(tmp_path / "d", layout)
    splits = load_splits(DataSpec(data_dir=str(root), split=(0.6, 0.2, 0.2), seed=3))
    assert splits.train.input_shape == (3, 12, 12) and splits.train.classes == ["a", "b"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 4, 4)
    m = splits.meta
    assert m["source"] == "class_folders" and m["split"]["fractions"] == [0.6, 0.2, 0.2] and m["split"]["seed"] == 3
    assert m["sizes_found"] == {"12x12": 18, "9x14": 2} and "most common, 12x12" in m["notes"][0]
    other = load_splits(DataSpec(data_dir=str(root), split=(0.6, 0.2, 0.2), seed=4)).meta["split"]["files_sha256"]
    assert other["test"] != m["split"]["files_sha256"]["test"]


@pytest.mark.parametrize("classes, n, match", [(("a",), 4, "only the class folder 'a'"), (("a", "b"), 0, "hold no images")])
def test_one_class_or_no_images_is_one_sentence_exit_2(tmp_path, capsys, classes, n, match):
    from foldcnn.cli import main

    root = _unsplit(tmp_path, classes, n)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    assert main(["train", "--data", str(root), "--model", "lol-gold-fraction", "--out", str(tmp_path / "r"),
                 "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1 and err.startswith("foldcnn train: error:")
    assert not (tmp_path / "r" / "checkpoint" / "config.json").exists()


@pytest.fixture
def user_net(tmp_path, monkeypatch):
    name = write_user_module(tmp_path, monkeypatch, USER_CNNS, "user_net")
    return f"{name}:NoBias"


def test_train_user_cnn_on_class_folders_records_split_and_aids(tmp_path, capsys, user_net):
    from foldcnn.cli import main

    root = _unsplit(tmp_path, n=8)
    args = ["train", "--data", str(root), "--model", user_net, "--epochs", "1", "--quiet", "--split", "0.5,0.25,0.25"]
    assert main([*args, "--fold", "2", "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "left out for conv2 (conv without bias" in err  # said on stderr ...
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["data"]["split"]["sizes"] == {"train": 12, "val": 6, "test": 6}
    aids = run["features"]["training_aids"]  # ... and recorded
    assert "conv2" in aids["train_batchnorm"]["skipped"] and aids["zero_init_head"]["layer"] == "fc"
    assert aids["slot_diagonal_init"] == {"on": True}  # the default for a CNN by import path
    assert run["model_config"]["kwargs"] == {"num_classes": 3, "input_shape": [3, 12, 12]}
    assert main([*args, "--fold", "2", "--no-slot-diagonal-init", "--out", str(tmp_path / "r2")]) == 0
    off = json.loads((tmp_path / "r2" / "run.json").read_text())
    assert off["features"]["training_aids"]["slot_diagonal_init"] == {"on": False}
    assert off["train_config"]["slot_diagonal_init"] is False
    ck = load_checkpoint(tmp_path / "r" / "checkpoint")
    assert (ck.model.fold, ck.model.num_classes, ck.class_names) == (2, 3, ["a", "b", "c"])


def test_train_from_weights_and_refusals(tmp_path, capsys, user_net):
    from foldcnn.cli import main
    from foldcnn.models.imported import build_original

    root = _unsplit(tmp_path, n=8)
    orig = build_original(user_net, {"num_classes": 3})
    torch.save(orig.state_dict(), tmp_path / "w.pt")
    base = ["train", "--data", str(root), "--model", user_net, "--epochs", "1", "--quiet"]
    assert main([*base, "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "r")]) == 0
    torch.save(orig, tmp_path / "module.pt")  # a pickled whole module
    torch.save(build_original(user_net, {"num_classes": 3, "width": 4}).state_dict(), tmp_path / "other.pt")
    cases = [("module.pt", "torch.save(model.state_dict()"), ("other.pt", "do not fit this architecture")]
    for name, match in cases:
        capsys.readouterr()
        assert main([*base, "--weights", str(tmp_path / name), "--out", str(tmp_path / f"run-{name}")]) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and len(err.splitlines()) == 1 and err.startswith("foldcnn train: error:")
        assert not (tmp_path / f"run-{name}" / "checkpoint").exists()
