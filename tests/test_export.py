import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from foldcnn import create_model, fold_images, pad_to_fold
from foldcnn.backends import (
    BackendError,
    check_onnx_parity,
    export_onnx,
    prediction_agreement,
)
from foldcnn.backends.onnx_export import fold_calibration
from foldcnn.cli import main
from foldcnn.checkpoints import save_checkpoint

ort = pytest.importorskip("onnxruntime")

README = Path(__file__).resolve().parents[1] / "docs" / "export.md"  # the worked example, run verbatim
SECTION = "## Run an exported folded model with plain onnxruntime"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("sot-coin-count", fold=3, num_classes=4, input_size=(12, 20)).eval()


def uint8_images(n: int, shape=(3, 12, 20), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)


def run_file(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": x})[0]


def test_export_has_a_dynamic_batch_axis_and_equals_eager(model, tmp_path):
    path = export_onnx(model, tmp_path / "m.onnx")
    assert path == tmp_path / "m.onnx"
    for n in (1, 7):  # two batch sizes through one file
        x = torch.rand(n, 9, 12, 20)
        with torch.no_grad():
            np.testing.assert_allclose(run_file(path, x.numpy()), model(x).numpy(), rtol=1e-4, atol=1e-5)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "images" and inp.shape[1:] == [9, 12, 20] and isinstance(inp.shape[0], str)
    assert out.name == "logits" and out.shape[1] == 12
    parity = check_onnx_parity(model, path, batch_sizes=(1, 4))
    assert parity["max_abs_diff"] < 1e-4 and parity["agreement"] == 1.0 and parity["batch_sizes"] == [1, 4]


def test_sidecar_describes_how_to_fold(model, tmp_path):
    export_onnx(model, tmp_path / "m.onnx", class_names=["a", "b", "c", "d"], opset=13)
    meta = json.loads((tmp_path / "m.onnx.json").read_text())
    assert meta["fold"] == 3 and meta["num_classes"] == 4 and meta["class_names"] == ["a", "b", "c", "d"]
    assert meta["input_shape"] == [3, 12, 20] and meta["folded_input_shape"] == [9, 12, 20]
    assert meta["input_name"] == "images" and meta["output_name"] == "logits"
    assert meta["normalization"]["scale"] == pytest.approx(1 / 255) and meta["precision"] == "fp32"
    assert meta["opset"] == 13 and meta["model"]["name"] == "sot-coin-count"


def test_static_batch_export_fixes_the_batch(model, tmp_path):
    path = export_onnx(model, tmp_path / "s.onnx", dynamic_batch=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == 2


def test_export_into_a_missing_folder_is_a_clear_error(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(model, tmp_path / "no" / "m.onnx")


def test_int8_export_is_smaller_and_keeps_predictions(model, tmp_path):
    images = uint8_images(60)
    fp32 = export_onnx(model, tmp_path / "f.onnx")
    int8 = export_onnx(model, tmp_path / "q.onnx", int8_calibration=images)
    assert json.loads((tmp_path / "q.onnx.json").read_text())["precision"] == "int8"
    assert int8.stat().st_size < 0.6 * fp32.stat().st_size  # int8 weights
    x = fold_calibration(images, 3, (3, 12, 20))
    ref, got = run_file(fp32, x), run_file(int8, x)
    # Random weights give small, close logits; check closeness relative to their scale, and
    # equal argmax wherever fp32's top-2 margin is larger than the int8 error.
    err = np.abs(got - ref).max()
    assert err <= 0.05 * np.abs(ref).max()
    top2 = np.sort(ref.reshape(-1, 4), axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * err
    assert clear.sum() >= 10
    assert (ref.reshape(-1, 4).argmax(1) == got.reshape(-1, 4).argmax(1))[clear].all()
    assert prediction_agreement(ref, got, fold=3) >= 0.8


def test_fold_calibration_uses_every_image():
    images = uint8_images(7)
    x = fold_calibration(images, 3, (3, 12, 20))
    assert x.shape == (3, 9, 12, 20) and x.dtype == np.float32 and x.max() <= 1.0
    # The partial last fold is completed with the first images, not zeros.
    filled = torch.cat([images, images[:2]]).float() / 255
    np.testing.assert_array_equal(x, fold_images(filled, 3).numpy())
    with pytest.raises(BackendError, match="must be uint8"):
        fold_calibration(images.float(), 3, (3, 12, 20))


# ----------------------------------------------------------------------------- the README
def readme_snippet() -> str:
    text = README.read_text()
    assert SECTION in text, "docs/export.md lost its onnxruntime section"
    section = text.split(SECTION, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_snippet_folds_like_foldcnn_and_classifies_like_the_model(model, tmp_path, monkeypatch, capsys):
    export_onnx(model, tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(readme_snippet(), "docs/export.md", "exec"), ns)  # the snippet, verbatim
    assert len(capsys.readouterr().out.strip()) > 0  # it printed its class names
    for n in (1, 3, 7):  # short of a fold, exactly a fold, a partial last fold
        images = uint8_images(n, seed=n)
        padded, real = pad_to_fold(images.float() / 255, 3)
        np.testing.assert_array_equal(ns["fold"](images.numpy()), fold_images(padded, 3).numpy())
        assert real == n
        probs = ns["classify"](images.numpy())
        with torch.no_grad():
            expected = torch.softmax(model.classify(images.float() / 255), dim=1).numpy()
        assert probs.shape == (n, 4)
        np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------------------------- the CLI
def _checkpoint(tmp_path, model, calibration: bool) -> Path:
    cal = uint8_images(40) if calibration else None
    return save_checkpoint(tmp_path / ("ck-cal" if calibration else "ck"), model, ["w", "x", "y", "z"],
                           calibration_images=cal)


def test_cli_export_round_trip(model, tmp_path, capsys):
    ck = _checkpoint(tmp_path, model, calibration=True)
    out = tmp_path / "model.onnx"
    assert main(["export", str(ck), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"max abs logit diff [0-9.e-]+", printed) and "wrote" in printed
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["class_names"] == ["w", "x", "y", "z"] and meta["fold"] == 3
    x = torch.rand(5, 9, 12, 20)
    with torch.no_grad():
        np.testing.assert_allclose(run_file(out, x.numpy()), model(x).numpy(), rtol=1e-4, atol=1e-5)
    # An existing file is kept unless --overwrite.
    assert main(["export", str(ck), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    q = tmp_path / "q.onnx"
    assert main(["export", str(ck), "--out", str(q), "--precision", "int8"]) == 0
    assert "int8" in capsys.readouterr().out
    assert json.loads((tmp_path / "q.onnx.json").read_text())["precision"] == "int8"


def test_cli_int8_without_calibration_images_says_how_to_get_them(model, tmp_path, capsys):
    ck = _checkpoint(tmp_path, model, calibration=False)
    assert main(["export", str(ck), "--out", str(tmp_path / "q.onnx"), "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert "has no calibration images" in err and "foldcnn train" in err and "calibration_images" in err
    assert not (tmp_path / "q.onnx").exists()


def test_cli_bad_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("opset", ["5", "99"])
def test_cli_unusable_opset_is_one_line_and_writes_nothing(model, tmp_path, capsys, opset):
    ck = _checkpoint(tmp_path, model, calibration=False)
    assert main(["export", str(ck), "--out", str(tmp_path / "m.onnx"), "--opset", opset]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"opset {opset} is not one torch" in err[0] and "from 7 to" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_cli_export_that_onnxruntime_cannot_run_leaves_no_file(model, tmp_path, capsys, monkeypatch):
    import foldcnn.backends

    ck = _checkpoint(tmp_path, model, calibration=False)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")

    def refuse(*args, **kwargs):  # what onnxruntime raises for a graph it has no kernels for
        raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for Relu(1)")

    monkeypatch.setattr(foldcnn.backends, "check_onnx_parity", refuse)
    assert main(["export", str(ck), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "onnxruntime cannot run the exported file" in err[0] and "NOT_IMPLEMENTED" in err[0]
    assert out.read_bytes() == b"the previous export"  # --force replaces only with a file that works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "m.onnx"]
    (tmp_path / "afile").write_text("x")
    assert main(["export", str(ck), "--out", str(tmp_path / "afile" / "m.onnx")]) == 2
    assert "afile is a file, not a folder" in capsys.readouterr().err
