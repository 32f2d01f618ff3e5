"""Models by import path (foldcnn.models.imported) and their checkpoints (format version 2)."""

import json

import pytest
import torch

from foldcnn import create_model
from foldcnn.checkpoints import CheckpointError, load_checkpoint, read_config, save_checkpoint
from foldcnn.errors import FoldcnnError
from foldcnn.models import model_entry
from foldcnn.models.imported import ImportedModelError, build_original, import_builder, is_import_path
from foldcnn.models.transform import FoldError
from tiny_data import USER_CNNS, write_user_module



@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A fresh module of user CNNs in the current directory (a unique name: no import cache)."""
    name = write_user_module(tmp_path, monkeypatch, USER_CNNS, "user_cnn")
    return name


def test_is_import_path():
    assert is_import_path("pkg.mod:Name") and not is_import_path("lol-gold-fraction")


def test_class_and_function_builders_fold_with_kwargs(user_module):
    m = create_model(f"{user_module}:Net", fold=4, num_classes=6, input_shape=(3, 12, 16))
    assert (m.fold, m.num_classes, m.input_shape) == (4, 6, (3, 12, 16))
    assert m.classify(torch.rand(5, 3, 12, 16)).shape == (5, 6)
    f = create_model(f"{user_module}:make", fold=1, input_shape=[3, 8, 8])
    assert f.num_classes == 4 and f.config.kwargs == {"input_shape": (3, 8, 8)}
    # fold=1 is the original architecture: the user's own state_dict loads into it
    orig = build_original(f"{user_module}:make")
    f.load_state_dict(orig.state_dict())
    orig.eval(), f.eval()
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(f(x), orig(x))


def test_input_shape_from_the_model_attribute_or_a_clear_error(user_module):
    assert create_model(f"{user_module}:WithShape", fold=2).input_shape == (3, 8, 10)
    with pytest.raises(FoldcnnError, match="input_shape"):
        create_model(f"{user_module}:Net", fold=2)


@pytest.mark.parametrize("suffix, match", [
    (":Nope", "has no 'Nope'"),
    (":not_a_module", "returned a int, not an nn.Module"),
    (":raises", "raised RuntimeError: bad builder"),
])
def test_bad_builders_are_one_sentence(user_module, suffix, match):
    with pytest.raises(ImportedModelError, match=match):
        create_model(user_module + suffix, fold=2, input_shape=(3, 8, 8))


def test_missing_module_and_malformed_path():
    with pytest.raises(ImportedModelError, match="cannot import module 'no_such_pkg_x.mod'"):
        model_entry("no_such_pkg_x.mod:Net")
    with pytest.raises(ImportedModelError, match="must look like package.module:Name"):
        import_builder("pkg.mod:")


def test_forward_failure_and_unfoldable_layer_name_the_layer(user_module):
    with pytest.raises(FoldError, match="'fc'.*fails on the given input_shape"):
        create_model(f"{user_module}:Broken", fold=2, input_shape=(3, 8, 8))
    with pytest.raises(FoldError, match="'conv'.*grouped convolution"):
        create_model(f"{user_module}:Grouped", fold=2, input_shape=(3, 8, 8))


def test_checkpoint_round_trip_reimports_and_refolds(user_module, tmp_path):
    m = create_model(f"{user_module}:Net", fold=2, num_classes=3, input_shape=(3, 8, 8)).eval()
    path = save_checkpoint(tmp_path / "ck", m, ["a", "b", "c"])
    cfg = read_config(path)
    assert cfg["format_version"] == 2 and cfg["model_source"] == "import"
    assert cfg["model"]["name"] == f"{user_module}:Net" and cfg["model"]["kwargs"]["input_shape"] == [3, 8, 8]
    ck = load_checkpoint(path)
    assert (ck.model.fold, ck.model.num_classes, ck.class_names) == (2, 3, ["a", "b", "c"])
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ck.model.classify(x), m.classify(x))
    assert not list(tmp_path.glob("ck/*.pt")) and not list(tmp_path.glob("ck/*.pkl"))


def test_zoo_checkpoints_of_format_version_1_still_load(tmp_path):
    m = create_model("sot-coin-count", fold=2, num_classes=3, input_size=(17, 40))
    path = save_checkpoint(tmp_path / "ck", m, ["a", "b", "c"])
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_source"] == "zoo"
    del cfg["model_source"]
    cfg["format_version"] = 1
    (path / "config.json").write_text(json.dumps(cfg))
    assert load_checkpoint(path).model.num_classes == 3


def test_builder_gone_or_weights_changed_fail_naming_path_and_keys(user_module, tmp_path):
    m = create_model(f"{user_module}:Net", fold=2, num_classes=3, input_shape=(3, 8, 8))
    path = save_checkpoint(tmp_path / "ck", m, ["a", "b", "c"])
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"]["kwargs"]["width"] = 16  # the builder now makes another architecture
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"do not fit.*shape mismatch conv\.weight"):
        load_checkpoint(path)
    cfg["model"]["name"] = "gone_module_y:Net"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="cannot import module 'gone_module_y'"):
        load_checkpoint(path)


def test_bench_configs_and_analyze_take_an_import_path(user_module, capsys):
    from foldcnn.bench.presets import preset_configs
    from foldcnn.bench.sweep import _build_model
    from foldcnn.cli import main

    kwargs = {"num_classes": 3, "input_shape": (3, 8, 8)}
    _, configs = preset_configs("quick", models=(f"{user_module}:Net",), folds=(1, 2), model_kwargs=kwargs,
                                baselines=())
    assert {c.fold for c in configs} == {1, 2} and all(dict(c.model_kwargs) == kwargs for c in configs)
    m = _build_model(next(c for c in configs if c.fold == 2), seed=0)
    assert (m.fold, m.num_classes, m.input_shape) == (2, 3, (3, 8, 8))
    assert main(["analyze", f"{user_module}:Net", "--model-kwargs", '{"input_shape": [3, 8, 8]}',
                 "--folds", "1,2"]) == 0
    assert f"{user_module}:Net" in capsys.readouterr().out
    assert main(["analyze", f"{user_module}:Net", "--model-kwargs", "[1]"]) == 2
    assert "must be a JSON object" in capsys.readouterr().err
