"""foldcnn.scaleout: inputs -> units, the Ray task/actor functions in-process, and whole runs on a
2-CPU local Ray cluster compared with the single-process Predictor."""

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from foldcnn.infer.options import PredictOptions
import torch
from PIL import Image

from foldcnn.data.readers import DataReadError
from foldcnn.infer import Predictor
from foldcnn.infer.results import RESULT_COLUMNS
from foldcnn.models import create_model
from foldcnn.scaleout.inputs import expand_inputs, make_units
from foldcnn.scaleout.tasks import FoldedInference, decode_units
from foldcnn.checkpoints import CheckpointError, save_checkpoint

FOLD = 4
N_IMAGES = 7  # 7 = one full fold + 3: the last image fold is padded by 1
N_FRAMES = 30  # 7 full folds + 2: the video's last fold is padded by 2


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=FOLD)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), model, [f"c{i}" for i in range(model.num_classes)])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """imgs/: 7 PNGs of varied sizes (two in a subfolder), a corrupt PNG, a text file; vid/video.mp4."""
    pytest.importorskip("av")
    from foldcnn.data.video import generate_video

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        p = root / "imgs" / ("sub" if i >= 5 else "") / f"im{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + 3 * i, 50 + i, 3), dtype=np.uint8)).save(p)
    (root / "imgs" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "imgs" / "notes.txt").write_text("not an image")
    video = generate_video(root / "vid", N_FRAMES, seed=1, size=(64, 48), progress=False).video_path
    return {"root": root, "imgs": root / "imgs", "video": video, "bad": str(root / "imgs" / "bad.png"),
            "images": sorted(str(p) for p in (root / "imgs").rglob("im*.png"))}


# ------------------------------------------------------------------------------- inputs
def test_expand_inputs_mixes_folders_globs_and_files_in_the_predictors_order(data):
    from foldcnn.infer.sources import expand_path

    root = data["root"]
    glob_ = str(root / "imgs" / "im*.png")
    files = expand_inputs([data["imgs"], glob_, data["video"], str(root / "none*.jpg")])
    folder = sorted([data["bad"]] + data["images"], key=lambda p: Path(p).parts)  # recursive, sorted by path
    top = sorted(str(root / "imgs" / f"im{i}.png") for i in range(5))
    assert files.files == [("image", p) for p in folder + top] + [("video", str(data["video"]))]
    assert files.images == folder + top and files.videos == [str(data["video"])]
    assert files.ignored == [str(root / "imgs" / "notes.txt")]
    assert files.unmatched == [str(root / "none*.jpg")]
    assert files.n_files == len(folder) + len(top) + 1
    # the same list, in the same order, as the single-process Predictor expands it
    local = [str(o) for item in (data["imgs"], glob_, data["video"]) for k, o in expand_path(item) if k != "ignored"]
    assert [p for _, p in files.files] == local


def test_expand_inputs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found"):
        expand_inputs([tmp_path / "missing.png"])
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(ValueError, match="no image or video files matched"):
        expand_inputs([tmp_path, str(tmp_path / "*.png")])
    with pytest.raises(ValueError, match="no inputs"):
        expand_inputs([])


def test_make_units_cut_image_runs_and_isolate_videos(data, tmp_path):
    files = expand_inputs([data["imgs"], data["video"], str(data["imgs"] / "im*.png")])
    sources, units, unit_of = make_units(files, images_per_task=4)
    assert sources == [p for _, p in files.files]
    # 8 images (a run: 4 + 4), the video alone, then a run of 5 (4 + 1): never a unit across a video
    assert [(u["kind"], len(u["ids"])) for u in units] == [("images", 4), ("images", 4), ("video", 1),
                                                          ("images", 4), ("images", 1)]
    assert [i for u in units for i in u["ids"]] == list(range(len(sources)))
    for u, unit in enumerate(units):
        assert [os.path.abspath(sources[i]) for i in unit["ids"]] == unit["paths"]
        assert all(unit_of[i] == u for i in unit["ids"])


def test_number_rows_counts_positions_as_the_predictor():
    from foldcnn.scaleout.outputs import number_rows

    # files: 0 image, 1 image (failed), 2 video with 3 frames then a failure, 3 image
    rows = {"source_id": np.array([3, 2, 0, 2, 2]), "frame": np.array([-1, 4, -1, 0, 2]),
            "class_index": np.arange(5), "confidence": np.linspace(0, 1, 5, dtype=np.float32)}
    out = number_rows(rows, np.array([1, 2]), n_files=4)
    assert out["source_id"].tolist() == [0, 2, 2, 2, 3] and out["frame"].tolist() == [-1, 0, 2, 4, -1]
    assert out["index"].tolist() == [0, 2, 3, 4, 6]  # 1: the failed image; 5: the video's failure
    assert out["class_index"].tolist() == [2, 3, 4, 1, 0]


# ------------------------------------------------------ the Ray functions, run in-process
def _run_in_process(units, ckpt, batch_size=8, stride=1, on_error="skip"):
    rows = []
    for unit in units:
        batch = {k: np.array([unit[k]], dtype=object) for k in ("kind", "ids", "paths")}
        rows += list(decode_units(batch, fold=FOLD, input_shape=(3, 22, 52), stride=stride, chunk=batch_size,
                                  on_error=on_error))
    actor = FoldedInference(str(ckpt), PredictOptions(batch_size=batch_size, threads=1))
    return rows, [actor(r) for r in rows]


def test_decode_emits_whole_padded_folds_and_failure_rows(data, ckpt):
    files = expand_inputs([data["imgs"], data["video"]])
    sources, units, _ = make_units(files, images_per_task=8)
    rows, _ = _run_in_process(units, ckpt)
    folds = [r for r in rows if (r["error"] == "").all()]
    fails = [r for r in rows if (r["error"] != "").all()]
    assert all(r["image"].shape[1:] == (FOLD, 3, 22, 52) and r["image"].dtype == np.uint8 for r in folds)
    valid = np.concatenate([r["valid"].reshape(-1) for r in folds])
    assert valid.sum() == N_IMAGES + N_FRAMES
    # images: 7 -> 2 folds, 1 padded slot; video: 30 frames -> 8 folds, 2 padded slots
    assert len(valid) - valid.sum() == 1 + 2
    for r in folds:  # padded slots are zero images with no source
        pad = ~r["valid"]
        assert (r["image"][pad] == 0).all() and (r["source_id"][pad] == -1).all()
    assert len(fails) == 1 and sources[fails[0]["source_id"][0, 0]] == data["bad"]
    assert not fails[0]["valid"].any() and "cannot identify image" in fails[0]["error"][0]


def _video_unit(path, source_id=3):
    return {"kind": np.array(["video"], object), "ids": np.array([[source_id]], object),
            "paths": np.array([[str(path)]], object)}


def test_broken_video_keeps_frames_before_the_error(monkeypatch):
    from foldcnn.data import readers

    def five_then_fail(path, input_size, stride, resize, keyframes=False):
        for t in range(5):
            yield t * stride, np.full((3, *input_size), t, dtype=np.uint8)
        raise readers.VideoReadError(f"cannot read video {path}: decoding failed after 5 frames")

    monkeypatch.setattr(readers, "iter_video_arrays", five_then_fail)
    rows = list(decode_units(_video_unit("cam.mp4"), fold=FOLD, input_shape=(3, 22, 52), stride=2, chunk=4,
                             on_error="skip"))
    folds, fail = rows[:-1], rows[-1]
    assert np.concatenate([r["frame"][r["valid"]] for r in folds]).tolist() == [0, 2, 4, 6, 8]
    assert [int(r["image"][0, 0, 0, 0, 0]) for r in folds] == [0, 4]  # chunks of 4, the last one padded
    assert fail["error"][0].endswith("decoding failed after 5 frames") and fail["source_id"][0, 0] == 3
    with pytest.raises(DataReadError, match="after 5 frames"):
        list(decode_units(_video_unit("cam.mp4"), fold=FOLD, input_shape=(3, 22, 52), stride=2, chunk=4,
                          on_error="raise"))


def test_undecodable_video_is_one_failure_row(tmp_path):
    pytest.importorskip("av")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0" * 1000)
    rows = list(decode_units(_video_unit(bad), fold=FOLD, input_shape=(3, 22, 52), stride=1, chunk=8,
                             on_error="skip"))
    assert len(rows) == 1 and not rows[0]["valid"].any() and "cannot read video" in rows[0]["error"][0]


def test_in_process_inference_equals_predictor(data, ckpt):
    inputs = [data["imgs"], data["video"]]
    files = expand_inputs(inputs)
    sources, units, _ = make_units(files, images_per_task=8)
    _, outs = _run_in_process(units, ckpt, batch_size=8)
    got = {}
    for o in outs:
        for s, fr, c, conf, err in zip(o["source_id"], o["frame"], o["class_index"], o["confidence"], o["error"]):
            got[(sources[s], None if fr < 0 else int(fr))] = (int(c), float(conf), err)
    assert got[(data["bad"], None)][0] == -1 and got[(data["bad"], None)][2]
    want = _predictor_results(ckpt, inputs)
    assert set(got) - {(data["bad"], None)} == set(want)
    for key, (c, conf) in want.items():
        assert got[key][0] == c and abs(got[key][1] - conf) < 1e-5, key


def _predictor_results(ckpt, inputs, stride=1):
    """(source, frame) -> (class_index, confidence) from the single-process Predictor over the
    same inputs (its isolation rule: the images as one stream, the video as another)."""
    p = Predictor.from_checkpoint(ckpt, batch_size=64, workers=0, on_error="skip")
    return {(str(q.source), q.frame): (q.class_index, q.confidence) for q in p.predict(inputs, stride=stride)}


def test_read_tasks_honour_resize_off_and_max_pixels(data, ckpt):
    images = [{"kind": "images", "ids": [0, 1], "paths": data["images"][:2]}]
    batch = {k: np.array([images[0][k]], dtype=object) for k in ("kind", "ids", "paths")}
    kw = {"fold": FOLD, "input_shape": (3, 22, 52), "stride": 1, "chunk": 8, "on_error": "skip"}
    fails = list(decode_units(batch, resize=False, **kw))  # the PNGs are not 22 x 52: refused, named
    assert [r["source_id"][0, 0] for r in fails] == [0, 1] and all("22" in r["error"][0] for r in fails)
    big = list(decode_units(batch, max_pixels=10, **kw))
    assert len(big) == 2 and all(r["error"][0] for r in big)
    ok = list(decode_units(batch, resize_mode="nearest", **kw))
    local = Predictor.from_checkpoint(ckpt, workers=0, resize_mode="nearest")._spec
    from foldcnn.infer.sources import load_image_file

    want = np.stack([load_image_file(p, local)[0] for p in data["images"][:2]])
    assert len(ok) == 1 and (ok[0]["image"][0, :2] == want).all()


# ------------------------------------------------------------------ checks before Ray
def test_missing_ray_gives_install_hint(monkeypatch, data, ckpt, tmp_path):
    from foldcnn.scaleout import ray_engine

    monkeypatch.setitem(sys.modules, "ray.data", None)  # makes "import ray.data" fail
    with pytest.raises(ImportError, match=r"pip install 'foldcnn\[ray\]'"):
        ray_engine.run_ray_predict(ckpt, [data["imgs"]], tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"formats": ("parquet", "xlsx")}, "formats"), ({"batch_size": 0}, "batch_size"),
    ({"on_error": "ignore"}, "on_error"), ({"num_actors": 0}, "num_actors"), ({"stride": 0}, "stride"),
    ({"device": "tpu"}, "device"), ({"threads": 0}, "threads"),
    ({"workers": 4}, "cannot honour workers"), ({"select_seconds": 1.0}, "cannot honour select_seconds"),
    ({"partial": "fallback", "fallback": "ck"}, "fallback is not available"), ({"backend": "auto"}, "auto"),
])
def test_bad_arguments_are_rejected_first(kwargs, match, data, ckpt, tmp_path):
    from foldcnn.scaleout import run_ray_predict

    with pytest.raises(ValueError, match=match):
        run_ray_predict(ckpt, [data["imgs"]], tmp_path, **kwargs)


def test_bad_checkpoint_fails_before_a_cluster_starts(data, tmp_path):
    ray = pytest.importorskip("ray")
    from foldcnn.scaleout import run_ray_predict

    with pytest.raises(CheckpointError, match="does not exist"):
        run_ray_predict(tmp_path / "nope", [data["imgs"]], tmp_path / "out", progress=False)
    assert not ray.is_initialized()
    assert not (tmp_path / "out").exists()


def test_cluster_starts_local_joins_address_and_reuses_a_session(monkeypatch):
    ray = pytest.importorskip("ray")
    from foldcnn.scaleout import ray_engine

    calls = []
    monkeypatch.setattr(ray_engine, "_check_reachable", lambda address: calls.append(("check", address)))
    state = {"on": False}
    monkeypatch.setattr(ray, "is_initialized", lambda: state["on"])
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(("init", kw.get("address"))))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown", None)))
    with ray_engine._cluster(None, progress=False) as where:
        assert where == "local"
    with ray_engine._cluster("ray://head:10001", progress=False) as where:
        assert where == "ray://head:10001"
    # a local cluster is always new ("local"), never whatever RAY_ADDRESS points at; a joined one
    # is only disconnected from (ray.shutdown in a driver that connected leaves the cluster up)
    assert calls == [("init", "local"), ("shutdown", None), ("check", "ray://head:10001"),
                     ("init", "ray://head:10001"), ("shutdown", None)]
    calls.clear()
    state["on"] = True
    with ray_engine._cluster(None, progress=False) as where:
        assert where == "existing"
    assert calls == []


def test_unreachable_address_fails_fast():
    import socket
    import time

    from foldcnn.scaleout.ray_engine import _check_reachable

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match="ray start --head"):
        _check_reachable(f"127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 10
    _check_reachable("auto")  # left to Ray


def test_cli_ray_engine_starts_and_stops_its_own_cluster(data, ckpt, tmp_path, capsys):
    """The CLI entry point end to end: ``foldcnn predict --engine ray`` starts a local cluster,
    answers as the single-process Predictor does, and shuts the cluster down."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    from foldcnn.cli import main

    assert not ray.is_initialized(), "an earlier test left a Ray session open"
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), "--input", str(data["imgs"] / "im*.png"), "--out", str(out),
                 "--engine", "ray", "--batch-size", "8", "--quiet"]) == 0
    assert "cluster: local" in capsys.readouterr().out
    assert not ray.is_initialized()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 5 and summary["failed"] == []
    want = _predictor_results(ckpt, sorted(str(p) for p in data["imgs"].glob("im*.png")))
    rows = _read_csv(out / "predictions.csv")
    assert [(r["source"], int(r["class_index"])) for r in rows] == [(k[0], c) for k, (c, _) in sorted(want.items())]


# ----------------------------------------------------------------- on a Ray cluster
@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # a new cluster, never a running one
    yield ray
    ray.shutdown()


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _local_csv(ckpt, inputs, path, **options):
    from foldcnn.infer import PredictionWriter

    with Predictor.from_checkpoint(ckpt, workers=0, **options) as p, PredictionWriter(path) as w:
        w.write_all(p.predict_iter(inputs))
    return path.read_text()


def test_ray_run_equals_predictor_row_for_row_and_reports_failures(cluster, data, ckpt, tmp_path):
    import pyarrow.parquet as pq

    from foldcnn.scaleout import run_ray_predict

    inputs = [data["imgs"], data["video"]]
    s = run_ray_predict(ckpt, inputs, tmp_path / "ray", batch_size=8, num_actors=1, progress=False,
                        on_error="skip")
    n = N_IMAGES + N_FRAMES
    assert (s["images"], s["files"], s["image_files"], s["video_files"]) == (n, N_IMAGES + 2, N_IMAGES + 1, 1)
    assert [f["source"] for f in s["failed"]] == [data["bad"]] and "cannot identify" in s["failed"][0]["reason"]
    assert s["padded_images"] == 3 and s["images_per_s"] > 0 and s["fold"] == FOLD
    assert cluster.is_initialized()  # a session opened by the caller is left open

    local = _local_csv(ckpt, inputs, tmp_path / "local.csv", batch_size=8, on_error="skip")
    assert Path(s["outputs"]["csv"]).read_text() == local  # same schema, order, rounding, row for row
    table = pq.read_table(s["outputs"]["parquet"])
    assert tuple(table.column_names) == RESULT_COLUMNS
    rows = _read_csv(s["outputs"]["csv"])
    assert [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in table.to_pylist()] == rows
    assert [int(r["index"]) for r in rows] == list(range(1, n + 1))  # position 0 is bad.png, which failed
    assert all(r["frame"] == "" for r in rows[:N_IMAGES])  # images: no frame, never -1
    assert _read_csv(s["outputs"]["failed"]) == [{"source": data["bad"], "reason": s["failed"][0]["reason"]}]
    assert json.loads((tmp_path / "ray" / "summary.json").read_text())["images"] == n


def test_cli_predict_local_and_ray_write_the_same_csv(cluster, data, ckpt, tmp_path, capsys):
    from foldcnn.cli import main

    args = ["predict", str(ckpt), "--input", str(data["imgs"]), str(data["video"]), "--batch-size", "8",
            "--on-error", "skip", "--quiet", "--threads", "1"]
    assert main(args + ["--out", str(tmp_path / "local.csv"), "--workers", "0"]) == 0
    assert main(args + ["--out", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    local = (tmp_path / "local.csv").read_text()
    assert local.count("\n") == 1 + N_IMAGES + N_FRAMES
    assert (tmp_path / "ray" / "predictions.csv").read_text() == local


def test_ray_run_video_stride_resize_options_and_csv_only(cluster, data, ckpt, tmp_path):
    from foldcnn.scaleout import run_ray_predict

    opts = {"stride": 3, "resize_mode": "bilinear", "max_pixels": 64 * 48}
    s = run_ray_predict(ckpt, data["video"], tmp_path / "ray", batch_size=1024, formats=("csv",), progress=False,
                        **opts)
    rows = _read_csv(s["outputs"]["csv"])
    assert [int(r["frame"]) for r in rows] == list(range(0, N_FRAMES, 3))
    assert "parquet" not in s["outputs"] and not (tmp_path / "ray" / "predictions.parquet").exists()
    assert s["failed"] == [] and _read_csv(s["outputs"]["failed"]) == []
    assert Path(s["outputs"]["csv"]).read_text() == _local_csv(ckpt, data["video"], tmp_path / "l.csv", **opts)


def test_ray_run_on_error_raise_names_the_file(cluster, data, ckpt, tmp_path):
    from foldcnn.scaleout import run_ray_predict

    with pytest.raises(DataReadError, match="bad.png"):
        run_ray_predict(ckpt, [data["imgs"]], tmp_path, on_error="raise", progress=False)
    assert cluster.is_initialized()


@pytest.mark.slow
def test_ray_run_survives_an_inference_worker_killed_mid_job(cluster, ckpt, tmp_path):
    """SIGKILL of the inference actor while the job runs: Ray restarts it and retries its batches
    (Ray Data's actor pools restart and retry by default), and the rows equal an undisturbed run's."""
    import signal
    import threading
    import time

    from foldcnn.scaleout import run_ray_predict

    def inference_workers() -> list[int]:
        """Pids of this test's own Ray workers (descendants of this process) running the inference
        actor: the state API needs the dashboard, which the local cluster here runs without."""
        parent = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        ours, me = [], os.getpid()
        for pid in parent:
            p, seen = pid, 0
            while p in parent and p != me and seen < 64:
                p, seen = parent[p], seen + 1
            if p == me and pid != me:
                try:
                    if b"FoldedInference" in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                        ours.append(pid)
                except OSError:
                    continue
        return ours

    rng = np.random.default_rng(3)
    (tmp_path / "imgs").mkdir()
    for i in range(600):
        Image.fromarray(rng.integers(0, 256, (22, 52, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i:04d}.png")
    args = dict(batch_size=8, num_actors=1, progress=False, formats=("csv",))
    run_ray_predict(ckpt, [tmp_path / "imgs"], tmp_path / "calm", **args)
    killed, running = [], threading.Event()

    def kill_the_inference_actor():
        while running.is_set() and not killed:
            pids = inference_workers()
            if pids:
                time.sleep(0.5)  # let it take a few batches first
                if running.is_set():
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                return
            time.sleep(0.05)

    running.set()
    t = threading.Thread(target=kill_the_inference_actor)
    t.start()
    try:
        run_ray_predict(ckpt, [tmp_path / "imgs"], tmp_path / "killed", **args)
    finally:
        running.clear()
        t.join()
    assert killed, "the job ended before its inference actor could be killed; give it more images"
    assert (tmp_path / "killed" / "predictions.csv").read_bytes() == (tmp_path / "calm" / "predictions.csv").read_bytes()
