"""The openvino backend: parity with eager at every precision, option and batch size; the
Predictor through it at every count 1..3f+1 (partial folds); explicit precision and threads."""

import importlib.util

import numpy as np
import pytest
import torch

from foldcnn import create_model, fold_images, pad_to_fold, unfold_logits
from foldcnn.backends import BackendError, available_backends, create_backend, list_backends, prediction_agreement
from tiny_data import trained_easy_model

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino is not installed (pip install 'foldcnn[openvino]')")
MAX_BATCH = 8  # folded inputs
H, W, K = 12, 16, 5
# Largest |difference| to eager fp32 relative to the logits' scale: bf16 keeps 8 bits of
# mantissa, int8 256 levels per tensor (random weights, random calibration images: ONNX Runtime's
# int8 of the same graph is as far off, see test_qdq_int8_equals_onnx_runtimes_int8).
REL_TOL = {"fp32": 1e-5, "bf16": 0.03, "int8": 0.12}


def _tiny(fold: int, seed: int = 0):
    torch.manual_seed(seed)
    return create_model("lol-gold-fraction", fold=fold, num_classes=K, input_size=(H, W)).eval()


def _folded(model, n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *model.folded_input_shape, generator=torch.Generator().manual_seed(seed))


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _reference(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def _usable(precision: str) -> None:
    if ("openvino", precision) not in available_backends("cpu"):
        pytest.skip(f"openvino/{precision} is not usable on this CPU")


@pytest.fixture(scope="module")
def model():
    return _tiny(2)


@pytest.fixture(scope="module")
def calibration():
    return _images(64, seed=99)


# ------------------------------------------------------------------------------- registry
def test_support_without_openvino_says_how_to_install(monkeypatch):
    from foldcnn.backends import openvino as ov_backend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    support = ov_backend.openvino_support("cpu")
    assert set(support) == {"fp32", "bf16", "int8", "fp16"}
    assert all("pip install 'foldcnn[openvino]'" in why for why in support.values())


@needs_openvino
def test_registered_for_the_cpu_only(model):
    assert "openvino" in list_backends()
    assert ("openvino", "fp32") in available_backends("cpu")
    assert all(name != "openvino" for name, _ in available_backends("cuda"))
    with pytest.raises(BackendError, match="OpenVINO on the CPU only"):
        create_backend(model, "openvino", device="cuda")
    with pytest.raises(BackendError, match="fp16 runs on CUDA only"):
        create_backend(model, "openvino", precision="fp16")


@needs_openvino
def test_int8_needs_uint8_calibration_images(model):
    _usable("int8")
    with pytest.raises(BackendError, match="int8 needs calibration images"):
        create_backend(model, "openvino", precision="int8")
    with pytest.raises(BackendError, match="must be uint8"):
        create_backend(model, "openvino", precision="int8", calibration=torch.rand(8, 3, H, W))


def test_options_are_validated():
    from foldcnn.backends.openvino import OpenVINOOptions

    with pytest.raises(BackendError, match="hint must be one of latency, throughput"):
        OpenVINOOptions(hint="fast")
    with pytest.raises(BackendError, match="int8 must be one of qdq, nncf"):
        OpenVINOOptions(int8="dynamic")


@needs_openvino
def test_hint_can_be_chosen_by_environment(model, monkeypatch):
    from foldcnn.backends.openvino import DEFAULTS, HINT_ENV, default_options

    monkeypatch.delenv(HINT_ENV, raising=False)
    assert default_options() == DEFAULTS
    other = "throughput" if DEFAULTS.hint == "latency" else "latency"
    monkeypatch.setenv(HINT_ENV, other.upper())
    assert default_options().hint == other
    assert create_backend(model, "openvino", max_batch=2, threads=1).settings()["hint"] == other
    monkeypatch.setenv(HINT_ENV, "fastest")
    with pytest.raises(BackendError, match="FOLDCNN_OPENVINO_HINT must be one of latency, throughput"):
        create_backend(model, "openvino", max_batch=2)


# ------------------------------------------------------------------------------- parity
OPTIONS = [dict(), dict(shapes="dynamic"), dict(hint="throughput")]


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("opts", OPTIONS, ids=["latency-static", "latency-dynamic", "throughput"])
def test_outputs_equal_eager_at_every_batch_size(model, calibration, precision, opts):
    from foldcnn.backends.openvino import MAX_STATIC_SHAPES, OpenVINOBackend, OpenVINOOptions

    _usable(precision)
    b = OpenVINOBackend(model, precision=precision, threads=1, max_batch=MAX_BATCH, calibration=calibration,
                        options=OpenVINOOptions(**opts))
    assert (b.name, b.precision, b.fold, b.num_classes) == ("openvino", precision, 2, K)
    sizes = (1, 5, MAX_BATCH, MAX_BATCH + 3)
    if b.options.shapes == "static" and precision == "fp32":
        sizes += tuple(range(2, 2 + MAX_STATIC_SHAPES))  # more sizes than static models are kept
    for n in sizes:
        x = _folded(model, n, seed=n)
        ref = _reference(model, x)
        for given in (x, x.numpy()):
            y = b.run(given)
            assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (n, 2 * K)
            assert np.abs(y - ref).max() <= REL_TOL[precision] * np.abs(ref).max() + 1e-6, (n, precision)
    assert len(b._compiled) <= MAX_STATIC_SHAPES + 1  # the dynamic model + at most that many static ones
    first = b.run(_folded(model, 3))
    b.run(_folded(model, 3, seed=7))
    np.testing.assert_array_equal(first, b.run(_folded(model, 3)))  # outputs are the caller's, not reused
    b.close()
    with pytest.raises(BackendError, match="closed"):
        b.run(_folded(model, 1))


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_precision_and_threads_are_set_explicitly(model, calibration, precision):
    _usable(precision)
    b = create_backend(model, "openvino", precision=precision, threads=1, max_batch=4, calibration=calibration)
    import openvino as ov

    want = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[precision]  # fp32 is never silently bf16 (AMX)
    for compiled, _ in b._compiled.values():
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == getattr(ov.Type, want)
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    s = b.settings()
    assert s["threads"] == 1 and s["streams"] == 1 and s["inference_precision"] == want  # one thread: one stream


@needs_openvino
def test_qdq_int8_equals_onnx_runtimes_int8(model, calibration):
    """OpenVINO reading the QDQ graph computes what ONNX Runtime computes from it."""
    pytest.importorskip("onnxruntime")
    _usable("int8")
    ov_b = create_backend(model, "openvino", precision="int8", threads=1, max_batch=MAX_BATCH, calibration=calibration)
    ort_b = create_backend(model, "ort", precision="int8", threads=1, max_batch=MAX_BATCH, calibration=calibration)
    for n in (1, 5, MAX_BATCH + 3):
        x = _folded(model, n, seed=n)
        got, want = ov_b.run(x), ort_b.run(x)
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


@needs_openvino
def test_nncf_int8_equals_eager_within_tolerance(model, calibration):
    pytest.importorskip("nncf")
    from foldcnn.backends.openvino import OpenVINOBackend, OpenVINOOptions

    _usable("int8")
    b = OpenVINOBackend(model, precision="int8", threads=1, max_batch=MAX_BATCH, calibration=calibration,
                        options=OpenVINOOptions(int8="nncf"))
    for n in (1, MAX_BATCH):
        x = _folded(model, n, seed=n)
        ref = _reference(model, x)
        assert np.abs(b.run(x) - ref).max() <= REL_TOL["int8"] * np.abs(ref).max()


# ----------------------------------------------------------------------- through Predictor
def _manual(model, x: torch.Tensor) -> np.ndarray:
    """Eager fp32 probabilities: folds of f in input order, last fold zero-padded, padding dropped."""
    f, n = model.fold, x.shape[0]
    xp, _ = pad_to_fold(x.float() / 255, f)
    with torch.no_grad():
        return torch.softmax(unfold_logits(model(fold_images(xp, f)), f)[:n], dim=1).numpy()


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("f", [1, 2, 3, 4])
def test_predictor_every_count_equals_eager(f, precision, calibration):
    from foldcnn.infer import Predictor

    _usable(precision)
    model = _tiny(f)
    tol = {"fp32": 2e-6, "bf16": 0.02, "int8": 0.05}[precision]  # on probabilities
    with Predictor(model, backend="openvino", precision=precision, batch_size=2 * f, workers=0, threads=1,
                   calibration=calibration) as p:
        for n in range(1, 3 * f + 2):
            x = _images(n, seed=n)
            cls, probs = p.predict_arrays(x)
            want = _manual(model, x)
            assert probs.shape == (n, K)
            np.testing.assert_allclose(probs, want, rtol=0, atol=tol)
            if precision == "fp32":
                assert cls.tolist() == want.argmax(1).tolist()


# ------------------------------------------------------------------- trained: predictions kept
@pytest.fixture(scope="module")
def trained():
    """A briefly trained fold=2 model (100% on the easy task), calibration images, test set."""
    return trained_easy_model()


@needs_openvino
@pytest.mark.parametrize("precision, int8", [("bf16", "qdq"), ("int8", "qdq"), ("int8", "nncf")])
def test_lower_precision_keeps_predictions_of_a_trained_model(trained, precision, int8):
    from foldcnn.backends.openvino import OpenVINOBackend, OpenVINOOptions

    _usable(precision)
    if int8 == "nncf":
        pytest.importorskip("nncf")
    model, calibration, test = trained
    x = fold_images(test.images.float() / 255, 2)
    ref = _reference(model, x)
    assert (torch.from_numpy(ref).reshape(-1, 3).argmax(1) == test.labels).all()  # fp32 learned the task
    b = OpenVINOBackend(model, precision=precision, threads=1, max_batch=len(x), calibration=calibration,
                        options=OpenVINOOptions(int8=int8))
    got = b.run(x)
    assert prediction_agreement(ref, got, fold=2) >= 0.98
    # NNCF's symmetric int8 is coarser here than the QDQ graph's asymmetric activations (5.8% vs 2.7%).
    assert np.abs(got - ref).max() <= (0.08 if int8 == "nncf" else 0.05) * np.abs(ref).max()


@needs_openvino
def test_auto_selection_considers_openvino(model):
    from foldcnn.backends import select_backend

    b, report = select_backend(model, candidates=["eager", "openvino"], max_batch=4, seconds=0.2, threads=1)
    assert set(report["images_per_s"]) == {"eager/fp32", "openvino/fp32"}
    assert report["picked"] == f"{b.name}/{b.precision}"
