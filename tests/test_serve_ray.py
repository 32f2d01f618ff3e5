"""`foldcnn serve --engine ray` (foldcnn.serve.ray_serve) on a local Ray instance: the same answers
as the Predictor offline, the v2 endpoint, and a clean exit on SIGTERM."""

import json
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

from test_serve import png, random_images  # noqa: E402


@pytest.mark.slow
def test_ray_engine_serves_the_predictors_answers_and_exits_cleanly(tmp_path):
    import torch

    from foldcnn.checkpoints import save_checkpoint
    from foldcnn.infer import Predictor
    from foldcnn.models import create_model

    torch.manual_seed(0)
    model = create_model("apex-squad-count", fold=1)
    ck = save_checkpoint(tmp_path / "ck", model.eval(), [f"n{i}" for i in range(model.num_classes)])
    imgs = random_images(3, model.input_shape, seed=4)
    want_idx, want_probs = Predictor.from_checkpoint(ck, workers=0).predict_arrays(
        np.stack([a.transpose(2, 0, 1) for a in imgs]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "foldcnn", "serve", str(ck), "--engine", "ray", "--port", str(port),
                             "--threads", "1", "--log-level", "warning"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the Ray Serve app did not start"
            try:
                if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        r = httpx.post(url + "/v1/classify", timeout=60,
                       files=[("f", (f"{i}.png", png(a), "image/png")) for i, a in enumerate(imgs)])
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        assert [g["class_index"] for g in got] == want_idx.tolist()
        for g, k, p in zip(got, want_idx, want_probs):
            assert g["confidence"] == pytest.approx(float(p[k]), abs=2e-6)
        v2 = httpx.post(url + "/v2/models/foldcnn/infer", timeout=60, json={"inputs": [{
            "name": "pixels", "shape": [1, *model.input_shape], "datatype": "UINT8",
            "data": imgs[0].transpose(2, 0, 1).ravel().tolist()}], "outputs": [{"name": "class_index"}]})
        assert json.loads(v2.content)["outputs"][0]["data"] == [int(want_idx[0])]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "on Ray Serve: 1 replica(s)" in out
