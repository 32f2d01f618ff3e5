"""The loopback load generator (foldcnn.serve.loadgen) and `foldcnn serve-bench` (foldcnn.workflows.serve_bench)."""

import asyncio
import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from foldcnn.serve import ServeConfig, create_app  # noqa: E402
from foldcnn.serve.loadgen import classify_request, png_bytes, run_step, v2_binary_request, v2_json_request  # noqa: E402
from test_serve import ColorPredictor, LiveServer, png  # noqa: E402


def test_load_steps_count_answers_and_check_each_one():
    app = create_app(ColorPredictor(fold=4), ServeConfig(max_wait_ms=2))
    values = [(3, 4), (9,), (250, 1, 2)]
    reqs = [classify_request([png((v, 0, 0)) for v in vs]) for vs in values[:2]] + \
        [v2_binary_request("foldcnn", [png((v, 0, 0)) for v in values[2]])]
    checked = []

    def check(i, body):
        if i < 2:
            got = [r["class_index"] for r in json.loads(body)["results"]]
        else:  # v2_binary_request asks for class_index in JSON
            got = json.loads(body)["outputs"][0]["data"]
        assert got == list(values[i])
        checked.append(i)

    with LiveServer(app) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        result = asyncio.run(run_step("127.0.0.1", port, reqs, clients=3, requests=30, seconds=20, check=check))
    s = result.summary()
    assert s["sent"] == 30 and s["answered"] == 30 and s["refused"] == 0 and s["statuses"] == {"200": 30}
    assert sorted(set(checked)) == [0, 1, 2] and len(checked) == 30
    assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["max_ms"] and s["requests_per_s"] > 0


def test_request_builders_make_what_the_server_parses():
    app = create_app(ColorPredictor(fold=4), ServeConfig(max_wait_ms=1))
    img = png_bytes(8, 8, seed=3)
    with LiveServer(app) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        from foldcnn.serve.loadgen import send_one

        for req in (classify_request([img]), classify_request([img, img]), v2_json_request("foldcnn", [img]),
                    v2_binary_request("foldcnn", [img, img, img])):
            status, body = asyncio.run(send_one("127.0.0.1", port, req))
            assert status == 200, body


@pytest.mark.slow
def test_serve_bench_cli_writes_its_results(tmp_path, capsys):
    from foldcnn.cli import main

    out = tmp_path / "sb.json"
    assert main(["serve-bench", "--fold", "2", "--clients", "2", "--requests", "20", "--seconds", "3",
                 "--heavy-clients", "1", "--heavy-images", "2", "--victim-requests", "3", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["command"].startswith("foldcnn serve-bench") and doc["machine"]["cpu_model"] and doc["date"]
    assert [m["isolation"] for m in doc["models"]] == ["none", "request", "none"]  # f=1, f=2, f=2 invariant
    assert [r["answered"] for r in doc["steps"]] == [20, 20, 20]
    assert all(h["victim_statuses"] == {"200": 3} for h in doc["heavy"])
    printed = capsys.readouterr().out
    assert "f=2 invariant" in printed and "wrote" in printed
    from foldcnn.results import write_result
    from foldcnn.workflows.serve_bench import result_fields

    path = write_result(tmp_path / "results", **result_fields(doc))  # the project's results/ form
    data = json.loads(path.read_text())
    assert path.name.startswith("serve-bench-v1-heavy_") and len(data["rows"]) == 3 and data["heavy"]
    assert data["rows"][0]["answered"] == 20 and data["command"].startswith("foldcnn serve-bench")


def test_a_step_runs_in_a_client_process_of_its_own():
    import os

    from foldcnn.serve.loadgen import ClientProcess, step_in_process

    app = create_app(ColorPredictor(fold=4), ServeConfig(max_wait_ms=1))
    reqs = [classify_request([png((v, 0, 0))]) for v in (5, 6)]
    with LiveServer(app) as srv, ClientProcess() as clients:
        port = int(srv.url.rsplit(":", 1)[1])
        assert clients.call(os.getpid) != os.getpid()  # not this process (nor its heap)
        result = clients.call(step_in_process, "127.0.0.1", port, reqs, 4, 24, 20.0)
    assert result.sent == 24 and result.statuses == {"200": 24} and len(result.latencies_ms) == 24
