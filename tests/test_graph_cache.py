"""The ONNX graph of a checkpoint is exported / quantized once: the next Predictor reads it back
and answers the same; the key follows the weights, precision and calibration; a read-only
checkpoint folder falls back to the user cache, and where nothing is writable it still runs."""

import numpy as np
import pytest
import torch

from foldcnn.backends import graph_cache, onnx_export
from foldcnn.checkpoints import save_checkpoint
from foldcnn.infer import Predictor
from tiny_data import one_thread, random_images, tiny_model  # noqa: F401 (one_thread: autouse)

pytest.importorskip("onnxruntime")


@pytest.fixture
def ckpt(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLDCNN_CACHE_DIR", str(tmp_path / "user-cache"))
    return save_checkpoint(tmp_path / "ck", tiny_model(2), [f"c{i}" for i in range(5)],
                           calibration_images=random_images(16, seed=1))


def _no_export(*a, **k):
    raise AssertionError("the graph should have come from the cache")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_second_run_reads_the_cached_graph_and_answers_the_same(ckpt, monkeypatch, precision):
    x = random_images(10, seed=2)
    with Predictor.from_checkpoint(ckpt, backend="ort", precision=precision, workers=0) as p:
        first = p.predict_arrays(x)[1]
        assert p.stats.graph_cache["hit"] is False
        assert p.stats.graph_cache["path"].startswith(str(ckpt / graph_cache.CACHE_FOLDER))
    monkeypatch.setattr(onnx_export, "onnx_bytes", _no_export)
    monkeypatch.setattr(onnx_export, "quantize_int8", _no_export)
    with Predictor.from_checkpoint(ckpt, backend="ort", precision=precision, workers=0) as p:
        again = p.predict_arrays(x)[1]
        assert p.stats.graph_cache["hit"] is True
    np.testing.assert_array_equal(first, again)


def test_key_follows_weights_precision_and_calibration(tmp_path):
    names = [f"c{i}" for i in range(5)]
    ck = save_checkpoint(tmp_path / "a", tiny_model(2), names)
    calib = np.zeros((4, 3, 12, 16), np.uint8)
    base = graph_cache.graph_key(ck, "int8", calib)
    assert graph_cache.graph_key(ck, "int8", calib) == base
    assert graph_cache.graph_key(ck, "int8", torch.from_numpy(calib)) == base  # a tensor: the same bytes
    assert graph_cache.graph_key(ck, "fp32") != base
    assert graph_cache.graph_key(ck, "int8", calib + 1) != base
    other = save_checkpoint(tmp_path / "b", tiny_model(2, seed=1), names)
    assert graph_cache.graph_key(other, "int8", calib) != base
    with torch.no_grad():
        m2 = tiny_model(2)
        next(m2.parameters()).view(-1)[0] += 1e-3
    assert graph_cache.graph_key(save_checkpoint(tmp_path / "c", m2, names), "int8", calib) != base
    same = save_checkpoint(tmp_path / "d", tiny_model(2), [f"other{i}" for i in range(5)])  # names: not in the graph
    assert graph_cache.graph_key(same, "int8", calib) == base


def test_cached_graph_is_found_without_building_the_model(ckpt, monkeypatch):
    """The torch-free lookup computes the key a torch run stored the graph under."""
    assert graph_cache.cached_checkpoint_graph(ckpt, "int8") is None
    with Predictor.from_checkpoint(ckpt, backend="ort", precision="int8", workers=0) as p:
        want = p.predict_arrays(random_images(9, seed=3))[1]
    g = graph_cache.cached_checkpoint_graph(ckpt, "int8")
    assert g is not None and g.graph_cache["hit"] and (g.fold, g.num_classes, g.precision) == (2, 5, "int8")
    import foldcnn.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "load_checkpoint", _no_export)  # no torch model is built
    with Predictor.from_checkpoint(ckpt, backend="ort", precision="int8", workers=0) as p:
        assert p.graph is not None and p.class_names == [f"c{i}" for i in range(5)]
        np.testing.assert_array_equal(p.predict_arrays(random_images(9, seed=3))[1], want)


def test_read_only_checkpoint_uses_the_user_cache_then_no_cache(ckpt, tmp_path, monkeypatch):
    real_write = graph_cache._write

    def refuse(where):
        def write(path, data):
            if any(str(path).startswith(str(w)) for w in where):
                raise PermissionError(13, "Permission denied")
            real_write(path, data)
        return write

    monkeypatch.setattr(graph_cache, "_write", refuse([ckpt]))
    with Predictor.from_checkpoint(ckpt, backend="ort", workers=0) as p:
        info = p.stats.graph_cache
    assert info["path"].startswith(str(tmp_path / "user-cache")) and "not beside the checkpoint" in info["note"]
    with Predictor.from_checkpoint(ckpt, backend="ort", workers=0) as p:
        assert p.stats.graph_cache["hit"] is True  # found in the user cache
    monkeypatch.setenv("FOLDCNN_CACHE_DIR", str(tmp_path / "other-cache"))
    monkeypatch.setattr(graph_cache, "_write", refuse([ckpt, tmp_path / "other-cache"]))
    with Predictor.from_checkpoint(ckpt, backend="ort", workers=0) as p:
        assert p.stats.graph_cache["path"] is None and "rebuilt on every run" in p.stats.graph_cache["note"]
        assert len(p.predict(random_images(3))) == 3


def test_in_memory_models_are_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLDCNN_CACHE_DIR", str(tmp_path / "user-cache"))
    with Predictor(tiny_model(1), backend="ort", workers=0) as p:
        assert p.stats.graph_cache is None
    assert not (tmp_path / "user-cache").exists()
