import numpy as np
import pytest
import torch

from foldcnn import create_model, fold_images
from foldcnn.backends import (
    Backend,
    BackendError,
    available_backends,
    create_backend,
    list_backends,
    prediction_agreement,
    register_backend,
    select_backend,
)
from foldcnn.backends.cuda_graphs import batch_buckets, bucket_for
from tiny_data import trained_easy_model

MAX_BATCH = 8  # folded inputs




@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("lol-gold-fraction", fold=2, num_classes=5, input_size=(16, 20)).eval()


@pytest.fixture(scope="module")
def trained():
    """A briefly trained fold=2 model (100% on the easy task), calibration images, test set."""
    return trained_easy_model()


def reference(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def folded(model, n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *model.folded_input_shape, generator=torch.Generator().manual_seed(seed))


def largest_fp32_activation_bytes(model) -> int:
    """Bytes of the largest conv/linear input or output of one folded input, in fp32."""
    from foldcnn.analysis import analyze

    report = analyze(model, batch_size=model.fold, bytes_per_element=4)
    return max(max(layer.input_elements, layer.output_elements) for layer in report.layers) * 4


# ------------------------------------------------------------------------------- registry
def test_registry_lists_builtins_and_rejects_duplicates():
    assert {"eager", "compile", "ort", "cuda-graphs"} <= set(list_backends())
    pairs = available_backends("cpu")
    assert ("eager", "fp32") in pairs and ("ort", "fp32") in pairs and ("ort", "int8") in pairs
    assert all(name != "cuda-graphs" for name, _ in pairs)  # GPU only
    with pytest.raises(ValueError, match="already registered"):
        register_backend("eager", supports=lambda d: {"fp32": None})(lambda *a, **k: None)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="tensorrt"), "unknown backend 'tensorrt'.*eager"),
    (dict(precision="fp64"), "precision must be one of fp32, bf16, fp16, int8"),
    (dict(precision="fp16"), "fp16 runs on CUDA only.*usable on cpu: .*eager/fp32"),
    (dict(precision="int8"), "int8 runs on the ort and openvino backends"),
    (dict(name="ort", precision="bf16"), "bf16 is available on the eager, compile and openvino"),
    (dict(name="cuda-graphs"), "needs device='cuda'"),
    (dict(name="ort", precision="int8"), "int8 needs calibration images.*load_calibration"),
    (dict(device="tpu"), "device must be one of cpu, cuda"),
    (dict(max_batch=0), "max_batch must be an int >= 1"),
    (dict(threads=0), "threads must be an int >= 1"),
])
def test_bad_requests_raise_backend_error_naming_what_works(model, kwargs, match):
    kwargs = {"name": "eager", **kwargs}
    with pytest.raises(BackendError, match=match):
        create_backend(model, kwargs.pop("name"), **kwargs)


def test_cuda_request_without_gpu_is_a_clear_error(model):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendError, match="no CUDA GPU"):
        create_backend(model, "eager", device="cuda")


def test_int8_calibration_must_be_uint8_images(model):
    pytest.importorskip("onnxruntime")
    with pytest.raises(BackendError, match="must be uint8"):
        create_backend(model, "ort", precision="int8", calibration=torch.rand(8, 3, 16, 20))
    with pytest.raises(BackendError, match=r"uint8 \(N, 3, 16, 20\)"):
        create_backend(model, "ort", precision="int8", calibration=torch.zeros(8, 3, 9, 9, dtype=torch.uint8))


# ---------------------------------------------------------------------------- fp32 parity
FP32 = ["eager", pytest.param("ort", marks=pytest.mark.filterwarnings("ignore"))]


@pytest.mark.parametrize("name", FP32)
def test_fp32_backends_equal_eager_at_any_batch(model, name):
    if name == "ort":
        pytest.importorskip("onnxruntime")
    b = create_backend(model, name, max_batch=MAX_BATCH, threads=1)
    assert isinstance(b, Backend) and b.name == name and b.precision == "fp32"
    assert (b.fold, b.num_classes, b.input_shape) == (2, 5, (3, 16, 20))
    for n in (1, 5, MAX_BATCH, MAX_BATCH + 3):  # one, odd, max_batch, and more than max_batch
        x = folded(model, n, seed=n)
        for given in (x, x.numpy()):
            y = b.run(given)
            assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (n, 10)
            np.testing.assert_allclose(y, reference(model, x), rtol=1e-4, atol=1e-5)
    b.close()
    with pytest.raises(BackendError, match="closed"):
        b.run(folded(model, 1))


def test_ort_uses_the_thread_count_asked_for(model):
    pytest.importorskip("onnxruntime")
    b = create_backend(model, "ort", threads=1)
    assert b.threads == 1 and b.providers == ["CPUExecutionProvider"]


def test_run_rejects_unfolded_or_empty_input(model):
    b = create_backend(model, "eager")
    with pytest.raises(ValueError, match=r"expects folded inputs \(B, 6, 16, 20\).*fold_images"):
        b.run(torch.rand(4, 3, 16, 20))
    with pytest.raises(ValueError, match="B >= 1"):
        b.run(np.zeros((0, 6, 16, 20), np.float32))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        b.run([[0.0]])


def test_backend_leaves_the_callers_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    create_backend(model, "eager").run(folded(model, 2))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.is_contiguous()  # not moved to channels_last
    assert all(p.requires_grad for p in model.parameters())


def test_backends_run_models_folded_by_fold_model():
    from foldcnn.models.transform import fold_model

    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5))
    folded_cnn = fold_model(cnn, fold=2, input_shape=(3, 16, 16)).eval()
    x = folded(folded_cnn, 3)
    names = ["eager"] + (["ort"] if ("ort", "fp32") in available_backends() else [])
    for name in names:
        np.testing.assert_allclose(create_backend(folded_cnn, name).run(x), reference(folded_cnn, x),
                                   rtol=1e-4, atol=1e-6)


def test_non_contiguous_and_float64_inputs_are_accepted(model):
    b = create_backend(model, "eager")
    x = folded(model, 6).double()[::2]  # strided float64
    np.testing.assert_allclose(b.run(x.numpy()), reference(model, x.float()), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------- lower precisions
def _accuracy(logits: np.ndarray, labels: torch.Tensor) -> float:
    return float((torch.from_numpy(logits).reshape(-1, 3).argmax(1) == labels).float().mean())


@pytest.mark.parametrize("name, precision", [("eager", "bf16"), ("ort", "int8")])
def test_lower_precision_keeps_predictions_of_a_trained_model(trained, name, precision):
    if name == "ort":
        pytest.importorskip("onnxruntime")
    if (name, precision) not in available_backends("cpu"):
        pytest.skip(f"{name}/{precision} is not usable on this CPU")
    model, calibration, test = trained
    x = fold_images(test.images.float() / 255, 2)
    ref = reference(model, x)
    assert _accuracy(ref, test.labels) == 1.0  # the premise: fp32 learned the task
    b = create_backend(model, name, precision=precision, calibration=calibration, max_batch=len(x))
    got = b.run(x)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert prediction_agreement(ref, got, fold=2) >= 0.98
    assert _accuracy(got, test.labels) >= 0.98
    # Logits stay close relative to their scale (int8: 256 levels per tensor).
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


# ------------------------------------------------------------------------- CPU chunking
def test_cpu_chunk_keeps_every_activation_under_the_size(model, monkeypatch):
    from foldcnn.backends.torch_backends import DEFAULT_CPU_CHUNK_MIB, cpu_chunk

    largest = largest_fp32_activation_bytes(model)
    monkeypatch.delenv("FOLDCNN_CPU_CHUNK_MIB", raising=False)
    n = cpu_chunk(model, "fp32")
    assert n * largest <= DEFAULT_CPU_CHUNK_MIB * 2**20 < (n + 1) * largest  # the most that fit
    assert cpu_chunk(model, "bf16") in (2 * n, 2 * n + 1)  # half the bytes per element
    monkeypatch.setenv("FOLDCNN_CPU_CHUNK_MIB", "0")
    assert cpu_chunk(model, "fp32") is None
    monkeypatch.setenv("FOLDCNN_CPU_CHUNK_MIB", "lots")
    with pytest.raises(BackendError, match="FOLDCNN_CPU_CHUNK_MIB must be a number"):
        cpu_chunk(model, "fp32")


def test_chunked_cpu_calls_equal_one_call(model, monkeypatch):
    largest = largest_fp32_activation_bytes(model)
    monkeypatch.setenv("FOLDCNN_CPU_CHUNK_MIB", str(3 * largest / 2**20))  # three folded inputs per call
    chunked = create_backend(model, "eager", max_batch=MAX_BATCH)
    assert chunked.chunk == 3
    x = folded(model, 8)  # 3 + 3 + 2
    np.testing.assert_allclose(chunked.run(x), reference(model, x), rtol=1e-5, atol=1e-6)
    assert chunked.run(x[:2]).shape == (2, model.fold * model.num_classes)
    monkeypatch.setenv("FOLDCNN_CPU_CHUNK_MIB", "0")
    assert create_backend(model, "eager", max_batch=MAX_BATCH).chunk is None


# -------------------------------------------------------------------------------- compile
@pytest.mark.slow  # about 10 s alone, 30 s on a busy 2-core machine: inductor compiles C++
def test_compile_equals_eager_on_a_tiny_model():
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(12, 12)).eval()
    try:
        b = create_backend(model, "compile", max_batch=4)
    except BackendError as e:  # no C++ compiler on this machine: the error must say so
        assert "C++ compiler" in str(e)
        pytest.skip(str(e))
    for n in (4, 1):
        x = folded(model, n)
        np.testing.assert_allclose(b.run(x), reference(model, x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # inductor compiles C++, here for two chunk shapes
def test_compile_runs_chunked_cpu_calls(monkeypatch):
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(12, 12)).eval()
    largest = largest_fp32_activation_bytes(model)
    monkeypatch.setenv("FOLDCNN_CPU_CHUNK_MIB", str(3 * largest / 2**20))
    try:
        b = create_backend(model, "compile", max_batch=8)  # warms up chunks of 3 and the remainder 2
    except BackendError as e:
        pytest.skip(str(e))
    assert b.chunk == 3
    x = folded(model, 8)
    np.testing.assert_allclose(b.run(x), reference(model, x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # inductor compiles C++
def test_compile_bf16_casts_weights_once_and_agrees_with_fp32():
    if ("compile", "bf16") not in available_backends("cpu"):
        pytest.skip("this CPU has no native bf16")
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(12, 12)).eval()
    b = create_backend(model, "compile", precision="bf16", max_batch=4)
    assert {p.dtype for p in b.module.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the caller's model is untouched
    x = folded(model, 4)
    got, ref = b.run(x), reference(model, x)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max() + 1e-3


def test_compile_backends_raise_dynamos_recompile_limit(monkeypatch):
    import torch._dynamo.config as dynamo_config

    from foldcnn.backends.torch_backends import RECOMPILE_LIMIT, _raise_recompile_limit

    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    monkeypatch.setattr(dynamo_config, name, 8)
    _raise_recompile_limit()  # every compile backend calls this: past 8 models dynamo ran eager
    assert getattr(dynamo_config, name) == RECOMPILE_LIMIT


def test_compile_failure_is_reported_when_the_backend_is_built(model, monkeypatch):
    def broken_compile(module, **kw):
        def run(x):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(BackendError, match="torch.compile failed.*C\\+\\+ compiler.*eager or ort"):
        create_backend(model, "compile", max_batch=2)


# ------------------------------------------------------------------------------ agreement
def test_prediction_agreement_counts_equal_argmax_per_image():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    got = ref.copy()
    got[3] = [1.0, 0.0]
    assert prediction_agreement(ref, ref) == 1.0
    assert prediction_agreement(ref, got) == 0.75
    # Folded (N/f, f*K) with fold=2: rows hold 2 images each; the same 4 images.
    assert prediction_agreement(ref.reshape(2, 4), got.reshape(2, 4), fold=2) == 0.75
    with pytest.raises(ValueError, match="one shape"):
        prediction_agreement(ref, got[:3])


# ------------------------------------------------------------------------------- auto pick
def test_select_backend_times_candidates_and_returns_the_fastest(model):
    pytest.importorskip("onnxruntime")
    b, report = select_backend(model, candidates=["eager", "ort", ("ort", "int8"), ("eager", "fp16")],
                               max_batch=4, seconds=0.5, threads=1)
    assert report["picked"] == f"{b.name}/{b.precision}" and not b.closed
    assert set(report["images_per_s"]) == {"eager/fp32", "ort/fp32"}
    assert all(v > 0 for v in report["images_per_s"].values())
    assert report["picked"] == max(report["images_per_s"], key=report["images_per_s"].get)
    assert "calibration" in report["skipped"]["ort/int8"] and "eager/fp16" in report["skipped"]
    np.testing.assert_allclose(b.run(folded(model, 3)), reference(model, folded(model, 3)), rtol=1e-4, atol=1e-5)


def test_select_backend_default_candidates_are_fp32_only(model):
    with pytest.raises(BackendError, match="no backend to choose from"):
        select_backend(model, precisions=("fp16",), max_batch=2, seconds=0.1)


# ---------------------------------------------------------------------------- cuda graphs
def test_batch_buckets_are_powers_of_two_up_to_max_batch():
    assert batch_buckets(1) == [1]
    assert batch_buckets(8) == [1, 2, 4, 8]
    assert batch_buckets(6) == [1, 2, 4, 6]
    assert [bucket_for(n, batch_buckets(6)) for n in (1, 2, 3, 5, 6)] == [1, 2, 4, 6, 6]
    with pytest.raises(ValueError, match="larger than the largest bucket"):
        bucket_for(7, batch_buckets(6))


@pytest.mark.gpu
@pytest.mark.parametrize("name, precision", [("cuda-graphs", "fp32"), ("cuda-graphs", "fp16"),
                                             ("eager", "fp16"), ("eager", "fp32")])
def test_gpu_backends_match_cpu_eager(model, name, precision):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    b = create_backend(model, name, precision=precision, device="cuda", max_batch=MAX_BATCH)
    tol = 1e-2 if precision == "fp32" else 3e-2  # cuDNN may use TF32 for fp32 convolutions; fp16
    for n in (1, 3, MAX_BATCH, MAX_BATCH + 5):
        x = folded(model, n, seed=n)
        ref = reference(model, x)
        assert np.abs(b.run(x) - ref).max() <= tol * max(1.0, np.abs(ref).max())


def test_engine_agreement_is_the_share_of_classes_fp32_gives(trained):
    """eager fp32 agrees with itself exactly; a lower precision of a trained model agrees on almost
    every image, counted image by image (an odd count is folded with a padded last fold)."""
    from foldcnn.backends.agreement import MIN_AGREEMENT, engine_agreement

    model, calibration, test = trained
    images = test.images[:95]  # odd: the last fold is padded and its padding not counted
    assert engine_agreement(model, images, "eager", "fp32") == 1.0
    if ("ort", "int8") in available_backends("cpu"):
        agree = engine_agreement(model, images, "ort", "int8", calibration=calibration)
        assert MIN_AGREEMENT <= agree <= 1.0 and agree * 95 == round(agree * 95)
