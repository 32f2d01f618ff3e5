"""foldcnn.backends.graphs: an exported graph (.onnx + sidecar, or a checkpoint's cached graph) runs on
onnxruntime / OpenVINO with numpy alone. A subprocess checks that torch is never imported; answers
equal the torch path's; a missing or foreign sidecar, an engine or precision the graph lacks, and a
checkpoint whose graph is not cached where torch is absent each get one sentence (exit 2)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from foldcnn.backends.onnx_export import export_onnx
from foldcnn.checkpoints import save_checkpoint
from foldcnn.cli import main
from foldcnn.infer import Predictor
from tiny_data import one_thread, random_images, tiny_model, write_pngs  # noqa: F401 (one_thread: autouse)

pytest.importorskip("onnxruntime")

SRC = str(Path(__file__).resolve().parents[1] / "src")
NAMES = [f"c{i}" for i in range(5)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A fold-2 checkpoint with calibration images, its fp32 and int8 exports, 7 PNGs."""
    root = tmp_path_factory.mktemp("graphs")
    model = tiny_model(2)
    ck = save_checkpoint(root / "ck", model, NAMES, calibration_images=random_images(16, seed=1))
    export_onnx(model, root / "m.onnx", class_names=NAMES)
    export_onnx(model, root / "m8.onnx", class_names=NAMES, int8_calibration=random_images(16, seed=1))
    write_pngs(root / "imgs", random_images(7, seed=2))
    return root, ck


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run_slim(code: str, cwd, block_torch: bool = False) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter on this tree; ``block_torch`` stands for an install without torch."""
    head = "import sys\n" + ("sys.modules['torch'] = None\n" if block_torch else "")
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", head + code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_import_foldcnn_does_not_import_torch_and_lazy_names_still_work(tmp_path):
    r = _run_slim("import foldcnn, foldcnn.infer, foldcnn.backends\n"
                  "assert 'torch' not in sys.modules, 'torch imported'\n"
                  "assert callable(foldcnn.create_model) and 'torch' in sys.modules\n"
                  "assert foldcnn.FoldError.__module__ == 'foldcnn.models.transform'\n", tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("model, extra", [("m.onnx", []), ("m8.onnx", []), ("ck", ["--backend", "ort"]),
                                          ("ck", ["--backend", "ort", "--precision", "int8"]),
                                          ("ck", ["--backend", "openvino", "--precision", "int8"])])
def test_predict_runs_without_torch_and_answers_as_the_torch_path(setup, tmp_path, model, extra):
    root, ck = setup
    if "openvino" in extra:
        pytest.importorskip("openvino")
    precision = "int8" if "8" in model or "int8" in extra else "fp32"
    backend = "openvino" if "openvino" in extra else "ort"
    want = tmp_path / "want.csv"  # the torch path: the checkpoint built in torch, exported in this process
    assert main(["predict", str(ck), "--input", str(root / "imgs"), "--out", str(want), "--quiet", "--backend",
                 backend, "--precision", precision, "--workers", "0"]) == 0
    out = tmp_path / "got.csv"
    args = ["predict", str(root / model), *extra, "--input", str(root / "imgs"), "--out", str(out), "--quiet"]
    r = _run_slim(f"from foldcnn.cli import main\nrc = main({args!r})\n"
                  "assert 'torch' not in sys.modules, 'torch imported'\nraise SystemExit(rc)", tmp_path)
    assert r.returncode == 0, r.stderr
    got, ref = _rows(out), _rows(want)
    assert [g["index"] for g in got] == [str(i) for i in range(7)]
    assert [g["class_name"] for g in got] == [w["class_name"] for w in ref]
    np.testing.assert_allclose([float(g["confidence"]) for g in got], [float(w["confidence"]) for w in ref],
                               atol=1e-5)


def test_graph_predictor_equals_the_torch_model_on_ort(setup):
    root, ck = setup
    x = random_images(11, seed=5)
    with Predictor(tiny_model(2), backend="ort", workers=0) as p:
        want_cls, want = p.predict_arrays(x)
    with Predictor(str(root / "m.onnx"), workers=0) as p:  # default engine for a graph: ort
        assert p.graph is not None and p.stats.backend == "ort" and p.class_names == NAMES
        got_cls, got = p.predict_arrays(x.numpy())  # numpy in, numpy out
        preds = p.predict(x.numpy().transpose(0, 2, 3, 1))  # NHWC numpy too
    np.testing.assert_array_equal(got_cls, want_cls)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert [q.class_index for q in preds] == got_cls.tolist()


def test_graph_errors_are_one_sentence(setup, tmp_path, capsys):
    root, _ = setup
    lone = tmp_path / "lone.onnx"
    lone.write_bytes((root / "m.onnx").read_bytes())
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes((root / "m8.onnx").read_bytes())
    (tmp_path / "foreign.onnx.json").write_text((root / "m.onnx.json").read_text())
    old = tmp_path / "old.onnx"  # a sidecar without the graph's hash, of a graph of another shape
    export_onnx(tiny_model(2, num_classes=3), old, class_names=["a", "b", "c"])
    side = json.loads((tmp_path / "old.onnx.json").read_text())
    side.pop("graph_sha256")
    side.update(num_classes=5, class_names=NAMES)
    (tmp_path / "old.onnx.json").write_text(json.dumps(side))
    cases = [(lone, [], "has no sidecar"), (foreign, [], "describes another graph"),
             (old, [], "describes another graph"), (root / "m.onnx", ["--backend", "compile"], "runs on ort or openvino"),
             (root / "m.onnx", ["--precision", "int8"], "is a fp32 graph")]
    for path, extra, words in cases:
        out = tmp_path / "x.csv"
        assert main(["predict", str(path), *extra, "--input", str(root / "imgs"), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and err.count("\n") == 0 and "Traceback" not in err, err
        assert not out.exists()


def test_uncached_checkpoint_without_torch_names_foldcnn_export(tmp_path):
    ck = save_checkpoint(tmp_path / "fresh", tiny_model(2), NAMES)
    write_pngs(tmp_path / "imgs", random_images(2))
    for extra in (["--backend", "ort"], []):
        args = ["predict", str(ck), *extra, "--input", str(tmp_path / "imgs"), "--out", str(tmp_path / "x.csv")]
        r = _run_slim(f"from foldcnn.cli import main\nraise SystemExit(main({args!r}))", tmp_path, block_torch=True)
        assert r.returncode == 2, r.stderr
        assert "foldcnn export" in r.stderr and "torch" in r.stderr and "Traceback" not in r.stderr
    assert not (ck / "onnx-cache").exists()


def test_serve_runs_an_exported_graph_without_torch(setup, tmp_path):
    """``foldcnn serve MODEL.onnx`` answers and its process never loads torch's library."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    if not Path("/proc/self/maps").exists():
        pytest.skip("reads /proc/PID/maps")
    import socket
    import time
    import urllib.request

    root, _ = setup
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    p = subprocess.Popen([sys.executable, "-m", "foldcnn", "serve", str(root / "m.onnx"), "--port", str(port)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.poll() else "no start"
                time.sleep(0.2)
        body = (root / "imgs" / "00000.png").read_bytes()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/classify", data=body,
                                     headers={"Content-Type": "image/png"})
        answer = json.loads(urllib.request.urlopen(req, timeout=30).read())
        assert answer["results"][0]["class_name"] in NAMES
        assert "libtorch" not in Path(f"/proc/{p.pid}/maps").read_text()
    finally:
        p.terminate()
        p.wait(timeout=60)
