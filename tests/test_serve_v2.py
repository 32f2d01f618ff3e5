"""The KServe v2 / Open Inference Protocol endpoints: JSON and binary tensors, encoded files and
raw pixels, metadata and health, one JSON error per bad request, exact routing under concurrent
clients, and a stock client (tritonclient.http) where it is installed."""

import base64
import json
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from foldcnn.infer.options import PredictOptions  # noqa: E402
from foldcnn.serve import ServeConfig, create_app  # noqa: E402
from test_serve import ColorPredictor, LiveServer, asgi, png  # noqa: E402

INFER = "/v2/models/foldcnn/infer"


def binary_request(images: list[bytes], outputs=None, name="images", datatype="BYTES", shape=None,
                   declared=None, extra=b""):
    data = b"".join(len(b).to_bytes(4, "little") + b for b in images) + extra
    head = {"inputs": [{"name": name, "shape": shape or [len(images)], "datatype": datatype,
                        "parameters": {"binary_data_size": len(data) if declared is None else declared}}]}
    if outputs is not None:
        head["outputs"] = outputs
    head = json.dumps(head).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def json_request(images: list[bytes]) -> dict:
    return {"inputs": [{"name": "images", "shape": [len(images)], "datatype": "BYTES",
                        "data": [base64.b64encode(b).decode() for b in images]}]}


def split_binary_response(r) -> tuple[dict, bytes]:
    n = int(r.headers["inference-header-content-length"])
    return json.loads(r.content[:n]), r.content[n:]


def output(doc: dict, name: str) -> dict:
    return next(o for o in doc["outputs"] if o["name"] == name)


def test_json_and_binary_bytes_inputs_answer_in_order():
    app = create_app(ColorPredictor(fold=4), ServeConfig(max_wait_ms=1))
    imgs = [png((v, 0, 0)) for v in (7, 3, 200, 9, 11)]

    async def fn(c):
        a = await c.post(INFER, json=json_request(imgs) | {"id": "req-1"})
        body, headers = binary_request(imgs, outputs=[{"name": "class_index", "parameters": {"binary_data": True}},
                                                      {"name": "class_name"}])
        b = await c.post(INFER, content=body, headers=headers)
        return a, b

    a, b = asgi(app, fn)
    assert a.status_code == 200 and a.headers["content-type"] == "application/json"
    doc = a.json()
    assert doc["model_name"] == "foldcnn" and doc["id"] == "req-1"
    assert output(doc, "class_index") == {"name": "class_index", "datatype": "INT64", "shape": [5],
                                          "data": [7, 3, 200, 9, 11]}
    assert output(doc, "class_name")["data"] == ["red7", "red3", "red200", "red9", "red11"]
    assert output(doc, "confidence")["data"] == [0.5] * 5
    probs = output(doc, "probabilities")
    assert probs["shape"] == [5, 256] and len(probs["data"]) == 5 * 256
    assert b.status_code == 200
    head, data = split_binary_response(b)
    assert [o["name"] for o in head["outputs"]] == ["class_index", "class_name"]
    idx = output(head, "class_index")
    assert idx["parameters"]["binary_data_size"] == 5 * 8 == len(data)
    assert np.frombuffer(data, "<i8").tolist() == [7, 3, 200, 9, 11]
    assert output(head, "class_name")["data"] == ["red7", "red3", "red200", "red9", "red11"]


def test_pixels_input_needs_no_decoding():
    app = create_app(ColorPredictor(fold=4), ServeConfig(max_wait_ms=1))
    x = np.zeros((3, 3, 8, 8), np.uint8)
    x[:, 0, 0, 0] = [5, 6, 250]

    async def fn(c):
        a = await c.post(INFER, json={"inputs": [{"name": "pixels", "shape": [3, 3, 8, 8], "datatype": "UINT8",
                                                  "data": x.ravel().tolist()}],
                                      "parameters": {"binary_data_output": True}})
        head = json.dumps({"inputs": [{"name": "pixels", "shape": [3, 3, 8, 8], "datatype": "UINT8",
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "outputs": [{"name": "class_index"}]}).encode()
        b = await c.post(INFER, content=head + x.tobytes(), headers={"Inference-Header-Content-Length": str(len(head))})
        return a, b

    a, b = asgi(app, fn)
    head, data = split_binary_response(a)  # binary_data_output: every output binary
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert sum(sizes) == len(data)
    assert np.frombuffer(data[:24], "<i8").tolist() == [5, 6, 250]
    assert b.json()["outputs"][0]["data"] == [5, 6, 250]


def test_metadata_and_health():
    app = create_app(ColorPredictor(fold=4), ServeConfig(model_name="colors"))

    async def fn(c):
        return [await c.get(u) for u in ("/v2/health/ready", "/v2/health/live", "/v2", "/v2/models/colors",
                                         "/v2/models/colors/ready", "/v2/models/other")]

    ready, live, server, meta, model_ready, other = asgi(app, fn)
    assert ready.json() == {"ready": True} and live.json() == {"live": True}
    assert "binary_tensor_data" in server.json()["extensions"]
    m = meta.json()
    assert m["name"] == "colors" and {i["name"]: i["shape"] for i in m["inputs"]} == {"images": [-1],
                                                                                       "pixels": [-1, 3, 8, 8]}
    assert {o["name"] for o in m["outputs"]} == {"class_index", "confidence", "class_name", "probabilities"}
    assert model_ready.json() == {"name": "colors", "ready": True}
    assert other.status_code == 404 and "colors" in other.json()["error"]


@pytest.mark.parametrize("case, status, words", [
    ("name", 400, "no input 'photo'"),
    ("datatype", 400, "datatype BYTES"),
    ("shape", 400, "shape [N]"),
    ("pixels_shape", 400, "[N, 3, 8, 8]"),
    ("pixels_datatype", 400, "datatype UINT8"),
    ("short", 400, "declares"),
    ("element_short", 400, "only"),
    ("trailing", 400, "follow the last"),
    ("count", 400, "but 1 elements"),
    ("not_json", 400, "not valid JSON"),
    ("header_length", 400, "Inference-Header-Content-Length"),
    ("two_inputs", 400, "one input"),
    ("bad_output", 400, "no output 'logits'"),
    ("not_an_image", 415, "not an image"),
    ("model", 404, "no model 'other'"),
    ("version", 404, "one version"),
])
def test_bad_v2_requests_get_one_json_error(case, status, words):
    app = create_app(ColorPredictor(fold=4), ServeConfig(max_wait_ms=1))
    img = png((1, 0, 0))
    pixel_spec = {"name": "pixels", "shape": [1, 3, 8, 8], "datatype": "UINT8", "data": [0] * 192}
    url, kw = INFER, None
    if case == "name":
        kw = {"json": {"inputs": [json_request([img])["inputs"][0] | {"name": "photo"}]}}
    elif case == "datatype":
        kw = {"json": {"inputs": [json_request([img])["inputs"][0] | {"datatype": "UINT8"}]}}
    elif case == "shape":
        kw = {"json": {"inputs": [json_request([img])["inputs"][0] | {"shape": [1, 3]}]}}
    elif case == "pixels_shape":
        kw = {"json": {"inputs": [pixel_spec | {"shape": [1, 3, 9, 8]}]}}
    elif case == "pixels_datatype":
        kw = {"json": {"inputs": [pixel_spec | {"datatype": "FP32"}]}}
    elif case == "short":  # the binary payload is shorter than the header declares
        body, headers = binary_request([img], declared=10_000)
        kw = {"content": body, "headers": headers}
    elif case == "element_short":  # an element's length prefix runs past the data
        data = (len(img) + 50).to_bytes(4, "little") + img
        head = json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(data)}}]}).encode()
        kw = {"content": head + data, "headers": {"Inference-Header-Content-Length": str(len(head))}}
    elif case == "trailing":
        body, headers = binary_request([img], extra=b"xx")
        kw = {"content": body, "headers": headers}
    elif case == "count":
        kw = {"json": {"inputs": [json_request([img])["inputs"][0] | {"shape": [2]}]}}
    elif case == "not_json":
        kw = {"content": b"{nope", "headers": {"Content-Type": "application/json"}}
    elif case == "header_length":
        kw = {"content": b"{}", "headers": {"Inference-Header-Content-Length": "99"}}
    elif case == "two_inputs":
        kw = {"json": {"inputs": json_request([img])["inputs"] * 2}}
    elif case == "bad_output":
        kw = {"json": json_request([img]) | {"outputs": [{"name": "logits"}]}}
    elif case == "not_an_image":
        kw = {"json": json_request([b"GIF89a but not really"])}
    elif case == "model":
        url, kw = "/v2/models/other/infer", {"json": json_request([img])}
    elif case == "version":
        url, kw = "/v2/models/foldcnn/versions/2/infer", {"json": json_request([img])}

    async def fn(c):
        bad = await c.post(url, **kw)
        good = await c.post(INFER, json=json_request([png((4, 0, 0))]))  # the server keeps serving
        return bad, good

    bad, good = asgi(app, fn)
    assert bad.status_code == status, bad.text
    assert list(bad.json()) == ["error"] and words in bad.json()["error"], bad.json()
    assert output(good.json(), "class_index")["data"] == [4]


def test_concurrent_v2_and_v1_clients_get_exactly_their_own_answers():
    """Three kinds of clients at once (v1 multipart, v2 JSON, v2 binary) sharing folds and
    batches: every answer is the one for its own image, in its own order."""
    app = create_app(ColorPredictor(fold=4), ServeConfig(PredictOptions(batch_size=16), max_wait_ms=20, isolation="none"))
    got, want = {}, {}

    def client(k):
        values = [(k * 7 + j) % 256 for j in range(1 + k % 5)]
        want[k] = values
        imgs = [png((v, 0, 0)) for v in values]
        if k % 3 == 0:
            r = httpx.post(srv.url + "/v1/classify", timeout=30,
                           files=[("f", (f"{j}.png", b, "image/png")) for j, b in enumerate(imgs)])
            got[k] = [g["class_index"] for g in r.json()["results"]]
        elif k % 3 == 1:
            r = httpx.post(srv.url + INFER, json=json_request(imgs), timeout=30)
            got[k] = output(r.json(), "class_index")["data"]
        else:
            body, headers = binary_request(imgs, outputs=[{"name": "class_index",
                                                           "parameters": {"binary_data": True}}])
            r = httpx.post(srv.url + INFER, content=body, headers=headers, timeout=30)
            got[k] = np.frombuffer(split_binary_response(r)[1], "<i8").tolist()

    with LiveServer(app) as srv:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert got == want
    assert max(app.state.batcher.stats.batch_sizes) > 1  # requests did share batches


def test_stock_triton_client_speaks_to_the_server():
    httpclient = pytest.importorskip("tritonclient.http")
    app = create_app(ColorPredictor(fold=4), ServeConfig(max_wait_ms=1))
    with LiveServer(app) as srv:
        client = httpclient.InferenceServerClient(url=srv.url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("foldcnn")
        meta = client.get_model_metadata("foldcnn")
        assert meta["name"] == "foldcnn"
        images = httpclient.InferInput("images", [3], "BYTES")
        images.set_data_from_numpy(np.array([png((v, 0, 0)) for v in (12, 34, 56)], dtype=np.object_))
        res = client.infer("foldcnn", [images], outputs=[httpclient.InferRequestedOutput("class_index"),
                                                         httpclient.InferRequestedOutput("probabilities"),
                                                         httpclient.InferRequestedOutput("class_name")])
        assert res.as_numpy("class_index").tolist() == [12, 34, 56]
        assert res.as_numpy("probabilities").shape == (3, 256)
        assert [s.decode() for s in res.as_numpy("class_name")] == ["red12", "red34", "red56"]
        pixels = httpclient.InferInput("pixels", [2, 3, 8, 8], "UINT8")
        x = np.zeros((2, 3, 8, 8), np.uint8)
        x[:, 0, 0, 0] = [77, 88]
        pixels.set_data_from_numpy(x)
        assert client.infer("foldcnn", [pixels]).as_numpy("class_index").tolist() == [77, 88]
        bad = httpclient.InferInput("images", [1], "FP32")
        bad.set_data_from_numpy(np.zeros(1, np.float32))
        with pytest.raises(Exception, match="datatype BYTES"):
            client.infer("foldcnn", [bad])
        client.close()
