"""The HTTP server: body formats, order, shared batches, validation, auth, failures, metrics, drain.

Most tests drive the app in-process through httpx's ASGI transport; the concurrency, disconnect
and shutdown tests run uvicorn on a real loopback socket in a background thread.
"""

import asyncio
import base64
import io
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from PIL import Image

from foldcnn import create_model, fold_images, pad_to_fold, unfold_logits
from foldcnn.infer.options import PredictOptions
from foldcnn.serve import ImageLimits, RequestError, ServeConfig, create_app, decode_image


# ---------------------------------------------------------------------------------- stand-ins
class ModelPredictor:
    """A tiny zoo model behind the Predictor's fast path (``predict_arrays``)."""

    def __init__(self, fold=2):
        torch.manual_seed(0)
        self.model = create_model("apex-squad-count", fold=fold).eval()
        self.fold, self.input_shape = fold, self.model.input_shape
        self.class_names = [f"class{i}" for i in range(self.model.num_classes)]

    def predict_arrays(self, images):
        x, n = pad_to_fold(torch.as_tensor(images).float() / 255, self.fold)
        with torch.no_grad():
            probs = unfold_logits(self.model(fold_images(x, self.fold)), self.fold)[:n].softmax(1)
        return probs.argmax(1).numpy(), probs.numpy()


class ColorPredictor:
    """Folded stand-in whose answer names the image: class = red value of the top-left pixel."""

    def __init__(self, fold=4, delay_s=0.0, poison=None):
        self.fold, self.input_shape, self.delay_s, self.poison = fold, (3, 8, 8), delay_s, poison
        self.class_names = [f"red{i}" for i in range(256)]
        self.batches = []

    def predict_arrays(self, images):
        self.batches.append(images.shape[0])
        if self.delay_s:
            time.sleep(self.delay_s)
        idx = images[:, 0, 0, 0].astype(np.int64)
        if self.poison is not None and (idx == self.poison).any():
            raise RuntimeError("poisoned batch")
        probs = np.full((len(idx), 256), 0.5 / 255, np.float32)
        probs[np.arange(len(idx)), idx] = 0.5
        return idx, probs


def png(arr_or_color, size=(8, 8), mode="RGB", fmt="PNG") -> bytes:
    im = Image.new(mode, size, arr_or_color) if not isinstance(arr_or_color, np.ndarray) \
        else Image.fromarray(arr_or_color)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def random_images(n, shape, seed=0):
    g = np.random.default_rng(seed)
    return [g.integers(0, 256, (shape[1], shape[2], 3), dtype=np.uint8) for _ in range(n)]


def asgi(app, fn):
    """Run ``fn(client)`` against the app in-process, with its lifespan (batcher start/drain)."""

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await fn(client)

    return asyncio.run(main())


class LiveServer:
    """uvicorn on a free loopback port in a background thread."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", timeout_graceful_shutdown=10))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self

    def stop(self):
        self.server.should_exit = True
        self.thread.join(20)
        assert not self.thread.is_alive()

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.stop()
        self.sock.close()


@pytest.fixture(scope="module")
def model_predictor():
    return ModelPredictor(fold=2)


# ------------------------------------------------------------------------------ body formats
def test_single_raw_image_matches_the_offline_answer(model_predictor):
    img = random_images(1, model_predictor.input_shape)[0]
    app = create_app(model_predictor, ServeConfig(max_wait_ms=1))

    async def fn(c):
        return await c.post("/v1/classify", content=png(img), headers={"Content-Type": "image/png"})

    r = asgi(app, fn)
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    idx, probs = model_predictor.predict_arrays(torch.from_numpy(img).permute(2, 0, 1)[None])
    assert res["class_index"] == int(idx[0]) and res["class_name"] == f"class{idx[0]}"
    assert res["confidence"] == pytest.approx(float(probs[0, idx[0]]), abs=1e-6)


@pytest.mark.parametrize("body", ["multipart", "json"])
def test_many_images_come_back_in_order(model_predictor, body):
    imgs = random_images(5, model_predictor.input_shape, seed=1)
    blobs = [png(a) for a in imgs]
    app = create_app(model_predictor, ServeConfig(max_wait_ms=1))

    async def fn(c):
        if body == "json":
            return await c.post("/v1/classify", json={"images": [base64.b64encode(b).decode() for b in blobs]})
        return await c.post("/v1/classify", files=[("files", (f"{i}.png", b, "image/png"))
                                                  for i, b in enumerate(blobs)])

    r = asgi(app, fn)
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    # Alone in its batch, the request is folded exactly as offline prediction folds it.
    idx, probs = model_predictor.predict_arrays(torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in imgs]))
    assert [g["class_index"] for g in got] == idx.tolist()
    assert [g["confidence"] for g in got] == pytest.approx(probs[np.arange(5), idx].tolist(), abs=1e-6)


def test_order_and_routing_with_a_folded_model_across_formats():
    pred = ColorPredictor(fold=4)
    app = create_app(pred, ServeConfig(max_wait_ms=1))
    reds = [200, 3, 77, 15, 99, 1, 42]

    async def fn(c):
        raw = await c.post("/v1/classify", content=png((reds[0], 0, 0)), headers={"Content-Type": "image/png"})
        multi = await c.post("/v1/classify", files=[("a", ("x.png", png((v, 0, 0)), "image/png")) for v in reds])
        js = await c.post("/v1/classify", json={"images": [
            "data:image/png;base64," + base64.b64encode(png((v, 0, 0))).decode() for v in reds]})
        return raw, multi, js

    raw, multi, js = asgi(app, fn)
    assert [x["class_index"] for x in raw.json()["results"]] == reds[:1]
    assert [x["class_index"] for x in multi.json()["results"]] == reds
    assert [x["class_name"] for x in js.json()["results"]] == [f"red{v}" for v in reds]


# ----------------------------------------------------------------------------- batching
def test_concurrent_clients_share_batches_and_get_their_own_results():
    pred = ColorPredictor(fold=4, delay_s=0.02)
    app = create_app(pred, ServeConfig(PredictOptions(batch_size=64), max_wait_ms=150, isolation="none"))  # folds shared too
    clients = 8

    async def one(c, k):
        reds = [k * 10 + j for j in range(3)]  # colours unique to this client
        r = await c.post("/v1/classify", files=[("files", ("i.png", png((v, 0, 0)), "image/png")) for v in reds])
        assert r.status_code == 200, r.text
        return reds, [x["class_index"] for x in r.json()["results"]]

    async def main(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            return await asyncio.gather(*(one(c, k) for k in range(clients)))

    with LiveServer(app) as srv:
        out = asyncio.run(main(srv.url))
    for sent, got in out:
        assert got == sent
    stats = app.state.batcher.stats
    assert stats.images == 3 * clients and stats.batches < clients
    assert sum(pred.batches) == 3 * clients


def test_request_isolation_pads_each_request_to_whole_folds():
    pred = ColorPredictor(fold=4)
    app = create_app(pred, ServeConfig(PredictOptions(batch_size=64), max_wait_ms=150))  # isolation "request", the default

    async def fn(c):
        return await asyncio.gather(*(c.post("/v1/classify", files=[("f", ("i.png", png((k * 10 + j, 0, 0)),
                                                                            "image/png")) for j in range(3)])
                                      for k in range(4)))

    out = asgi(app, fn)
    assert [[x["class_index"] for x in r.json()["results"]] for r in out] == [[k * 10 + j for j in range(3)]
                                                                              for k in range(4)]
    stats = app.state.batcher.stats
    assert stats.images == 12 and stats.padded_images == 4  # one padding slot per 3-image request


def test_lone_request_is_flushed_after_max_wait():
    pred = ColorPredictor(fold=4)
    app = create_app(pred, ServeConfig(PredictOptions(batch_size=1024), max_wait_ms=30))

    async def fn(c):
        t0 = time.perf_counter()
        r = await c.post("/v1/classify", content=png((5, 0, 0)), headers={"Content-Type": "image/png"})
        return r, time.perf_counter() - t0

    r, elapsed_s = asgi(app, fn)
    assert r.status_code == 200 and r.json()["results"][0]["class_index"] == 5
    assert 0.025 <= elapsed_s < 5
    assert pred.batches == [1] and app.state.batcher.stats.padded_images == 3


# --------------------------------------------------------------------------- validation, auth
def test_bad_input_gets_4xx_with_one_sentence():
    pred = ColorPredictor()
    limits = ImageLimits(max_image_bytes=2000, max_pixels=50 * 50, max_images=3)
    app = create_app(pred, ServeConfig(max_wait_ms=1, limits=limits))
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)

    async def fn(c):
        post = c.post
        return {
            "garbage": await post("/v1/classify", content=b"not an image", headers={"Content-Type": "image/png"}),
            "truncated": await post("/v1/classify", content=png(noise[:20])[:600],
                                    headers={"Content-Type": "image/png"}),
            "big_file": await post("/v1/classify", content=png(noise), headers={"Content-Type": "image/png"}),
            "bomb": await post("/v1/classify", content=png((0, 0, 0), size=(60, 60)),
                               headers={"Content-Type": "image/png"}),
            "too_many": await post("/v1/classify", json={"images": [base64.b64encode(png((1, 1, 1))).decode()] * 4}),
            "bad_json": await post("/v1/classify", content=b"{", headers={"Content-Type": "application/json"}),
            "bad_b64": await post("/v1/classify", json={"images": ["***"]}),
            "ctype": await post("/v1/classify", content=b"x", headers={"Content-Type": "text/plain"}),
            "format": await post("/v1/classify", content=png((1, 1, 1), fmt="ICO"),
                                 headers={"Content-Type": "image/x-icon"}),
            "empty": await post("/v1/classify", json={"images": []}),
        }

    r = asgi(app, fn)
    expected = {"garbage": 415, "truncated": 400, "big_file": 413, "bomb": 413, "too_many": 413,
                "bad_json": 400, "bad_b64": 400, "ctype": 415, "format": 415, "empty": 400}
    assert {k: v.status_code for k, v in r.items()} == expected
    for v in r.values():
        msg = v.json()["error"]
        assert msg and "Traceback" not in msg and msg.count("\n") == 0
    assert "pixels" in r["bomb"].json()["error"] and "bytes" in r["big_file"].json()["error"]
    assert not pred.batches  # nothing bad reached the model
    s = parse_metrics(app.state.metrics.render())
    assert s['foldcnn_requests_total{status="413"}'] == 3
    assert s['foldcnn_request_errors_total{reason="too_large"}'] == 3


def test_body_limit_gives_413():
    app = create_app(ColorPredictor(), ServeConfig(limits=ImageLimits(max_body_bytes=100)))

    async def fn(c):
        return await c.post("/v1/classify", content=b"\0" * 500, headers={"Content-Type": "image/png"})

    r = asgi(app, fn)
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_channels_and_size_are_converted_or_rejected():
    limits = ImageLimits()
    grey = decode_image(png(90, size=(16, 4), mode="L"), (3, 8, 8), limits)
    assert grey.shape == (3, 8, 8) and grey.dtype == np.uint8 and (grey == 90).all()
    rgba = decode_image(png((10, 20, 30, 0), mode="RGBA"), (3, 8, 8), limits)
    assert rgba[:, 0, 0].tolist() == [10, 20, 30]
    assert decode_image(png((255, 0, 0)), (1, 8, 8), limits).shape == (1, 8, 8)
    with pytest.raises(RequestError, match="does not resize") as e:
        decode_image(png((1, 1, 1), size=(9, 8)), (3, 8, 8), ImageLimits(resize=False))
    assert e.value.status == 400
    assert decode_image(png((1, 1, 1)), (3, 8, 8), ImageLimits(resize=False)).shape == (3, 8, 8)
    from foldcnn.data.readers import resize_rgb

    big = random_images(1, (3, 37, 53), seed=3)[0]  # resized as files are: the same pixels exactly
    want = resize_rgb(big, (8, 8), "bilinear").transpose(2, 0, 1)
    assert np.array_equal(decode_image(png(big), (3, 8, 8), limits), want)


@pytest.mark.parametrize("fast", [True, False])
def test_png_uploads_by_libspng_give_pillows_tensors(monkeypatch, fast):
    """With the png extra, 8-bit RGB PNG uploads are decoded by libspng: the same tensors as
    Pillow's, the same errors (size without resizing, pixel limit)."""
    from foldcnn.data import readers

    if fast:
        pytest.importorskip("pyspng")
    else:
        monkeypatch.setattr(readers, "_spng", False)
    big = random_images(1, (3, 37, 53), seed=4)[0]
    assert (readers.decode_png_fast(png(big), None) is not None) == fast
    want = readers.resize_rgb(big, (8, 8), "bilinear").transpose(2, 0, 1)
    assert np.array_equal(decode_image(png(big), (3, 8, 8), ImageLimits()), want)
    assert np.array_equal(decode_image(png(big), (3, 37, 53), ImageLimits(resize=False)),
                          big.transpose(2, 0, 1))
    with pytest.raises(RequestError, match="does not resize"):
        decode_image(png(big), (3, 8, 8), ImageLimits(resize=False))
    with pytest.raises(RequestError, match="over the limit") as e:
        decode_image(png(big), (3, 8, 8), ImageLimits(max_pixels=37 * 53 - 1))
    assert e.value.status == 413


def test_large_pngs_decode_by_pillow_which_lets_other_threads_run(monkeypatch):
    """libspng holds the GIL for its whole decode (0.2 s for 16 megapixels: the event loop stops);
    a PNG over FAST_PNG_PIXELS goes through Pillow, which releases it: the same tensor."""
    from foldcnn.data import readers
    from foldcnn.serve import validation

    calls = []
    real = readers.decode_png_fast
    monkeypatch.setattr(readers, "decode_png_fast", lambda data, limit: calls.append(1) or real(data, limit))
    big = random_images(1, (3, 37, 53), seed=5)[0]
    want = readers.resize_rgb(big, (8, 8), "bilinear").transpose(2, 0, 1)
    assert np.array_equal(decode_image(png(big), (3, 8, 8), ImageLimits()), want) and calls == [1]
    monkeypatch.setattr(validation, "FAST_PNG_PIXELS", 37 * 53 - 1)
    assert np.array_equal(decode_image(png(big), (3, 8, 8), ImageLimits()), want) and calls == [1]


def test_api_key_is_required_when_set():
    app = create_app(ColorPredictor(), ServeConfig(max_wait_ms=1, api_key="s3cret"))
    body = {"content": png((4, 0, 0)), "headers": {"Content-Type": "image/png"}}

    async def fn(c):
        out = {}
        for name, extra in [("none", {}), ("wrong", {"Authorization": "Bearer nope"}),
                            ("bearer", {"Authorization": "Bearer s3cret"}), ("x-api-key", {"X-API-Key": "s3cret"})]:
            out[name] = await c.post("/v1/classify", content=body["content"], headers={**body["headers"], **extra})
        out["metrics"] = await c.get("/metrics")
        out["healthz"] = await c.get("/healthz")
        return out

    r = asgi(app, fn)
    assert r["none"].status_code == 401 and r["wrong"].status_code == 401
    assert "API key" in r["wrong"].json()["error"] and r["wrong"].headers["www-authenticate"] == "Bearer"
    assert r["bearer"].status_code == 200 and r["x-api-key"].status_code == 200
    assert r["metrics"].status_code == 401 and r["healthz"].status_code == 200


# --------------------------------------------------------------------------- failures, metrics
def test_model_exception_fails_that_batch_only_and_the_next_request_succeeds():
    pred = ColorPredictor(poison=13)
    app = create_app(pred, ServeConfig(max_wait_ms=1))

    async def fn(c):
        bad = await c.post("/v1/classify", content=png((13, 0, 0)), headers={"Content-Type": "image/png"})
        good = await c.post("/v1/classify", content=png((14, 0, 0)), headers={"Content-Type": "image/png"})
        return bad, good, await c.get("/metrics")

    bad, good, metrics = asgi(app, fn)
    assert bad.status_code == 500 and "poisoned batch" in bad.json()["error"]
    assert good.status_code == 200 and good.json()["results"][0]["class_index"] == 14
    assert parse_metrics(metrics.text)["foldcnn_batch_errors_total"] == 1


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|\+Inf|NaN)$')


def parse_metrics(text):
    samples = {}
    for line in text.strip().splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \w+ .+$", line), line
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def test_metrics_parse_and_count():
    pred = ColorPredictor(fold=4)
    app = create_app(pred, ServeConfig(PredictOptions(batch_size=8), max_wait_ms=1))

    async def fn(c):
        for n in (1, 3, 8):
            r = await c.post("/v1/classify", files=[("f", ("i.png", png((n, 0, 0)), "image/png"))] * n)
            assert r.status_code == 200
        await c.post("/v1/classify", content=b"junk", headers={"Content-Type": "image/png"})
        r = await c.get("/metrics")
        assert r.headers["content-type"].startswith("text/plain")
        return r.text

    s = parse_metrics(asgi(app, fn))
    assert s['foldcnn_requests_total{status="200"}'] == 3
    assert s['foldcnn_requests_total{status="415"}'] == 1
    assert s["foldcnn_request_latency_seconds_count"] == 4
    assert s["foldcnn_images_total"] == 12 and s["foldcnn_batches_total"] == 3
    assert s["foldcnn_padded_images_total"] == 3 + 1 + 0  # 1 -> 4, 3 -> 4, 8 -> 8
    assert s["foldcnn_batch_fill_ratio_sum"] == pytest.approx((1 + 3 + 8) / 8)
    buckets = [v for k, v in s.items() if k.startswith("foldcnn_request_latency_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 4  # cumulative, +Inf holds all
    assert s["foldcnn_batch_queue_wait_seconds_count"] == s["foldcnn_batch_compute_seconds_count"] == 3


_SERVED_TYPES = {
    "foldcnn_requests_total": "counter", "foldcnn_request_errors_total": "counter",
    "foldcnn_request_latency_seconds": "histogram", "foldcnn_batch_queue_wait_seconds": "histogram",
    "foldcnn_batch_compute_seconds": "histogram", "foldcnn_batch_fill_ratio": "histogram",
    "foldcnn_batches_total": "counter", "foldcnn_batch_errors_total": "counter", "foldcnn_images_total": "counter",
    "foldcnn_padded_images_total": "counter", "foldcnn_fallback_images_total": "counter",
    "foldcnn_dropped_images_total": "counter", "foldcnn_queue_images": "gauge", "foldcnn_max_batch_images": "gauge",
}


def test_metrics_names_types_and_no_created_samples():
    app = create_app(ColorPredictor(fold=4), ServeConfig(PredictOptions(batch_size=8), max_wait_ms=1))

    async def fn(c):
        await c.post("/v1/classify", content=png((1, 0, 0)), headers={"Content-Type": "image/png"})
        return await c.get("/metrics")

    r = asgi(app, fn)
    types = dict(re.findall(r"^# TYPE (\w+) (\w+)$", r.text, flags=re.M))
    assert types == _SERVED_TYPES
    assert "_created" not in r.text
    assert r.headers["content-type"] == app.state.metrics.content_type
    s = parse_metrics(r.text)
    assert s["foldcnn_max_batch_images"] == 8 and s["foldcnn_queue_images"] == 0
    assert s['foldcnn_batch_fill_ratio_bucket{le="+Inf"}'] == 1


def test_two_apps_in_one_process_keep_separate_metrics():
    apps = [create_app(ColorPredictor(fold=1), ServeConfig(max_wait_ms=1)) for _ in range(2)]

    async def fn(c):
        for _ in range(3):
            await c.post("/v1/classify", content=png((2, 0, 0)), headers={"Content-Type": "image/png"})

    asgi(apps[0], fn)
    assert apps[0].state.metrics.value("foldcnn_requests_total", status="200") == 3
    assert apps[1].state.metrics.value("foldcnn_requests_total", status="200") == 0
    assert parse_metrics(apps[1].state.metrics.render())["foldcnn_images_total"] == 0


# ------------------------------------------------------------------------ real socket, lifecycle
def test_graceful_shutdown_drains_in_flight_requests():
    pred = ColorPredictor(fold=1, delay_s=0.15)
    app = create_app(pred, ServeConfig(PredictOptions(batch_size=2), max_wait_ms=5))
    results = {}

    def client(k):
        r = httpx.post(srv.url + "/v1/classify", content=png((k, 0, 0)),
                       headers={"Content-Type": "image/png"}, timeout=30)
        results[k] = (r.status_code, r.json()["results"][0]["class_index"] if r.status_code == 200 else r.text)

    with LiveServer(app) as srv:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while app.state.batcher.stats.requests < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.batcher.stats.requests == 6
        srv.stop()  # 6 images at 2 per 0.15 s batch: most are still queued or computing now
        for t in threads:
            t.join(10)
    assert results == {k: (200, k) for k in range(6)}
    assert app.state.batcher.closing


def test_client_that_goes_away_breaks_nothing():
    pred = ColorPredictor(fold=1, delay_s=1.0)  # wide margins: a loaded machine delays the server's threads
    app = create_app(pred, ServeConfig(PredictOptions(batch_size=1), max_wait_ms=1))
    with LiveServer(app) as srv:
        def post(v, timeout):
            return httpx.post(srv.url + "/v1/classify", content=png((v, 0, 0)),
                              headers={"Content-Type": "image/png"}, timeout=timeout)

        blocker = threading.Thread(target=post, args=(1, 30))
        blocker.start()  # occupies the model for 1 s
        deadline = time.monotonic() + 10
        while not pred.batches and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(httpx.TimeoutException):
            post(2, 0.2)  # gives up while its image is still queued
        blocker.join()
        r = post(3, 30)
        assert r.status_code == 200 and r.json()["results"][0]["class_index"] == 3
        time.sleep(0.1)
        metrics = httpx.get(srv.url + "/metrics").text
    s = parse_metrics(metrics)
    assert s['foldcnn_requests_total{status="499"}'] == 1
    assert s["foldcnn_dropped_images_total"] == 1
    assert pred.batches == [1, 1]  # images 1 and 3; image 2 was dropped before it reached the model


def test_healthz_reports_the_model():
    app = create_app(ColorPredictor(fold=4), ServeConfig(PredictOptions(batch_size=10)))

    async def fn(c):
        return await c.get("/healthz")

    r = asgi(app, fn)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "fold": 4, "input_shape": [3, 8, 8], "num_classes": 256, "batch_size": 8,
                        "max_wait_ms": 5.0, "isolation": "request", "queue_images": 0, "queue_wait_estimate_ms": 0.0}


# ------------------------------------------------------------------------ real Predictor, CLI
def test_real_predictor_behind_the_server_matches_offline():
    infer = pytest.importorskip("foldcnn.infer")
    torch.manual_seed(1)
    model = create_model("apex-squad-count", fold=4).eval()
    pred = infer.Predictor(model, workers=0, batch_size=64)
    offline = infer.Predictor(model, workers=0, batch_size=64)
    imgs = random_images(6, model.input_shape, seed=3)
    app = create_app(pred, ServeConfig(PredictOptions(batch_size=64), max_wait_ms=1))

    async def fn(c):
        return await c.post("/v1/classify", files=[("files", ("i.png", png(a), "image/png")) for a in imgs])

    r = asgi(app, fn)
    assert r.status_code == 200, r.text
    idx, probs = offline.predict_arrays(torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in imgs]))
    got = r.json()["results"]
    assert [g["class_index"] for g in got] == idx.tolist()
    assert [g["confidence"] for g in got] == pytest.approx(probs[np.arange(6), idx].tolist(), abs=1e-5)
    assert app.state.batcher.stats.padded_images == 2  # 6 images -> 2 folds of 4


def test_cli_flags_make_the_config(monkeypatch):
    from foldcnn.cli import CLIError, build_parser
    from foldcnn.cli.serve import serve_config

    parse = build_parser().parse_args
    monkeypatch.setenv("FOLDCNN_API_KEY", "from-env")
    cfg = serve_config(parse(["serve", "ck", "--max-wait-ms", "2", "--batch-size", "256", "--max-pixels", "999",
                              "--no-resize", "--max-queue-ms", "250", "--replicas", "2", "--model-name", "m1"]))
    assert (cfg.max_wait_ms, cfg.batch_size, cfg.api_key) == (2.0, 256, "from-env")
    assert (cfg.max_queue_ms, cfg.replicas, cfg.model_name, cfg.isolation) == (250.0, 2, "m1", "auto")
    assert cfg.limits.max_pixels == 999 and not cfg.limits.resize and cfg.partial == "pad"
    for old in ("--max-batch", "--workers", "--max-bodies"):  # the old spellings are gone
        with pytest.raises(SystemExit):
            parse(["serve", "ck", old, "2"])
    with pytest.raises(CLIError, match="--max-queue-ms"):
        serve_config(parse(["serve", "ck", "--max-queue-ms", "0"]))
    assert serve_config(parse(["serve", "ck", "--api-key", "flag"])).api_key == "flag"
    with pytest.raises(CLIError, match="--max-images"):
        serve_config(parse(["serve", "ck", "--max-images", "0"]))


def test_serve_flags_come_from_the_config_fields():
    """ServeConfig composes PredictOptions (batch size, partial folds) and declares its own fields
    once; `foldcnn serve` has a flag for each of them."""
    from dataclasses import fields

    from foldcnn.cli import build_parser
    from foldcnn.cli.serve import serve_config
    from foldcnn.options import flag_of, is_cli_option

    cfg = ServeConfig(PredictOptions(batch_size=8, partial="pad"), max_wait_ms=2)
    assert (cfg.batch_size, cfg.partial, cfg.predict.backend) == (8, "pad", "eager")
    assert {f.name for f in fields(ServeConfig)} & {f.name for f in fields(PredictOptions)} == set()
    serve = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "serve")[1]
    flags = {s for a in serve._actions for s in a.option_strings}
    assert {flag_of(f) for f in fields(ServeConfig) if is_cli_option(f)} <= flags
    args = build_parser().parse_args(["serve", "ck", "--decode-threads", "3", "--max-images", "7", "--isolation",
                                      "request", "--batch-size", "16", "--body-timeout-s", "2.5"])
    cfg = serve_config(args)
    assert (cfg.decode_threads, cfg.limits.max_images, cfg.isolation, cfg.batch_size, cfg.body_timeout_s) == \
        (3, 7, "request", 16, 2.5)
    with pytest.raises(ValueError, match="replicas must be an int >= 1"):
        ServeConfig(replicas=0)


@pytest.mark.parametrize("key", ["", "caf\u00e9", "two words"])
def test_unusable_api_key_is_refused(monkeypatch, key):
    from foldcnn.cli import build_parser
    from foldcnn.cli.serve import serve_config

    with pytest.raises(ValueError, match="non-empty printable ASCII"):
        ServeConfig(api_key=key)
    with pytest.raises(ValueError, match="non-empty printable ASCII"):
        serve_config(build_parser().parse_args(["serve", "ck", "--api-key", key]))
    monkeypatch.setenv("FOLDCNN_API_KEY", key)  # set but empty is not "no key"
    with pytest.raises(ValueError, match="FOLDCNN_API_KEY"):
        serve_config(build_parser().parse_args(["serve", "ck"]))


def test_cli_port_out_of_range_or_in_use_is_one_line(tmp_path, capsys):
    from foldcnn.checkpoints import save_checkpoint
    from foldcnn.cli import main

    model = create_model("apex-squad-count", fold=2)
    ck = save_checkpoint(tmp_path / "ck", model, [f"n{i}" for i in range(model.num_classes)])
    assert main(["serve", str(ck), "--port", "99999"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--port must be from 0 to 65535, got 99999" in err[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["serve", str(ck), "--port", str(s.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot listen on 127.0.0.1:" in err[0]


def launch_cli_server(tmp_path, *flags):
    """`foldcnn serve` of a random-weight apex-squad-count f=2 checkpoint in a subprocess on a free
    loopback port, at once; returns (process, port, model)."""
    import subprocess
    import sys

    from foldcnn.checkpoints import save_checkpoint

    model = create_model("apex-squad-count", fold=2)
    save_checkpoint(tmp_path / "ck", model, [f"n{i}" for i in range(model.num_classes)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "foldcnn", "serve", str(tmp_path / "ck"), "--port", str(port),
                             "--log-level", "warning", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, port, model


def start_cli_server(tmp_path, *flags):
    """:func:`launch_cli_server`, once /healthz answers; returns (process, url, model)."""
    proc, port, model = launch_cli_server(tmp_path, *flags)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start: {proc.communicate()[1]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url, model
        except httpx.HTTPError:
            time.sleep(0.2)


def test_cli_server_serves_and_exits_cleanly_on_sigterm(tmp_path):
    import signal

    pytest.importorskip("foldcnn.infer")
    proc, url, model = start_cli_server(tmp_path, "--batch-size", "16")
    try:
        img = random_images(1, model.input_shape)[0]
        r = httpx.post(url + "/v1/classify", content=png(img), headers={"Content-Type": "image/png"})
        assert r.status_code == 200 and r.json()["results"][0]["class_name"].startswith("n")
        metrics = httpx.get(url + "/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert parse_metrics(metrics.text)['foldcnn_requests_total{status="200"}'] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    # uvicorn drains, then re-raises the signal to the handler foldcnn serve installed: a clean exit 0
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "fold 2" in out


def test_cli_processes_share_the_port_and_drain_on_sigterm(tmp_path):
    import signal
    import subprocess

    pytest.importorskip("foldcnn.infer")
    proc, url, model = start_cli_server(tmp_path, "--processes", "2")
    try:
        deadline = time.monotonic() + 60
        while len(children := subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                             text=True).stdout.split()) < 2:
            assert time.monotonic() < deadline, "two server processes did not start"
            time.sleep(0.2)
        imgs = random_images(6, model.input_shape, seed=9)
        for a in imgs:
            r = httpx.post(url + "/v1/classify", content=png(a), headers={"Content-Type": "image/png"}, timeout=30)
            assert r.status_code == 200 and r.json()["results"][0]["class_name"].startswith("n")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "2 server processes share" in out and out.count("serving ") == 1
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)  # the children have exited too


def test_processes_listen_on_sockets_of_their_own_on_linux():
    """On Linux each server process gets its own SO_REUSEPORT socket on the one port (the kernel
    spreads connections over them); elsewhere they share one."""
    import sys

    from foldcnn.cli.serve import _listening_sockets

    socks = _listening_sockets("127.0.0.1", 0, 3)
    try:
        assert len(socks) == 3 and len({s.getsockname()[1] for s in socks}) == 1
        assert len({id(s) for s in socks}) == (3 if sys.platform.startswith("linux") else 1)
    finally:
        for s in {*socks}:
            s.close()


def test_cli_processes_exit_cleanly_on_sigterm_while_loading(tmp_path):
    """SIGTERM as soon as the server processes exist (their model likely still loading): exit 0,
    no traceback, every child gone."""
    import signal
    import subprocess

    pytest.importorskip("foldcnn.infer")
    proc, _, _ = launch_cli_server(tmp_path, "--processes", "2")
    deadline = time.monotonic() + 60
    while len(children := subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                         text=True).stdout.split()) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "two server processes did not start"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)


def test_workers_need_one_predictor_each():
    with pytest.raises(ValueError, match="one per replica"):
        create_app(ColorPredictor(), ServeConfig(replicas=2))
    preds = [ColorPredictor(fold=1, delay_s=0.05), ColorPredictor(fold=1, delay_s=0.05)]
    app = create_app(preds, ServeConfig(PredictOptions(batch_size=1), replicas=2, max_wait_ms=1))

    async def fn(c):
        return await asyncio.gather(*(c.post("/v1/classify", content=png((v, 0, 0)),
                                             headers={"Content-Type": "image/png"}) for v in range(6)))

    out = asgi(app, fn)
    assert [r.json()["results"][0]["class_index"] for r in out] == list(range(6))
    assert all(p.batches for p in preds)  # both copies of the model did work


# ------------------------------------------------------------- server equals the Predictor
class SlotwiseCNN(torch.nn.Module):
    """A FoldedCNN-compatible model with exact routing: every slot's C channels go through the
    same small CNN, so an image's answer depends neither on its fold-mates nor on its slot, and
    the server (other fold-mates, other slots) must answer exactly what the Predictor writes."""

    def __init__(self, fold=4, num_classes=7, input_shape=(3, 8, 8)):
        super().__init__()
        self.fold, self.num_classes, self.input_shape = fold, num_classes, input_shape
        self.conv = torch.nn.Conv2d(input_shape[0], 8, 3, padding=1)
        self.head = torch.nn.Linear(8, num_classes)

    def forward(self, x):  # (N/f, f*C, H, W) -> (N/f, f*K)
        rows = x.shape[0]
        per_image = x.reshape(rows * self.fold, self.input_shape[0], *x.shape[2:])
        logits = self.head(torch.relu(self.conv(per_image)).mean((2, 3)))
        return logits.reshape(rows, self.fold * self.num_classes)


def test_slotwise_model_routes_exactly():
    torch.manual_seed(0)
    model = SlotwiseCNN().eval()
    x = torch.rand(8, 3, 8, 8)
    y = x.clone()
    y[1:4] = torch.rand(3, 3, 8, 8)  # image 0 keeps its slot, its fold-mates change
    with torch.no_grad():
        a, b = (unfold_logits(model(fold_images(t, 4)), 4) for t in (x, y))
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-6)
    assert not torch.allclose(a[1], b[1])
    with torch.no_grad():  # and no slot is special: image 0 in slot 2 gives the same logits
        c = unfold_logits(model(fold_images(torch.cat([y[1:3], x[:1], y[3:]]), 4)), 4)
    torch.testing.assert_close(a[0], c[2], rtol=0, atol=1e-6)


def test_server_over_http_answers_exactly_what_the_predictor_writes(tmp_path):
    from foldcnn.infer import Predictor

    torch.manual_seed(0)
    model = SlotwiseCNN().eval()
    imgs = random_images(11, model.input_shape, seed=5)
    files = []
    for i, a in enumerate(imgs):
        files.append(tmp_path / f"im{i:02d}.png")
        files[-1].write_bytes(png(a))
    with Predictor(model, workers=0, batch_size=8) as offline:
        want = [p.to_dict() for p in offline.predict(files)]
    app = create_app(Predictor(model, workers=0, batch_size=8), ServeConfig(PredictOptions(batch_size=8), max_wait_ms=20))
    parts = [[3, 0, 7], [10, 1], [5, 2, 9, 4, 8, 6]]  # three clients, shuffled: other fold-mates than offline

    with LiveServer(app) as server:
        def post(ids, out):
            out[tuple(ids)] = httpx.post(f"{server.url}/v1/classify", timeout=30,
                                         files=[("f", (f"{i}.png", files[i].read_bytes(), "image/png")) for i in ids])

        answers = {}
        threads = [threading.Thread(target=post, args=(ids, answers)) for ids in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for ids in parts:
        r = answers[tuple(ids)]
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        assert [g["index"] for g in got] == list(range(len(ids)))  # position in the request
        assert all(g["source"] is None and g["frame"] is None for g in got)
        for g, i in zip(got, ids):
            assert list(g) == list(want[i])  # the same columns in the same order
            assert (g["class_name"], g["class_index"], g["confidence"]) == \
                (want[i]["class_name"], want[i]["class_index"], want[i]["confidence"])
