"""foldcnn.infer.journal and ``predict --resume``: a run stopped at any batch (or killed at any
moment, torn row included) and resumed writes byte for byte the output of an uninterrupted run,
video frames and folds included; an output of another model, other inputs or other options is
refused with one sentence; a write that fails keeps what was committed."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from foldcnn.backends.onnx_export import export_onnx
from foldcnn.cli import main
from foldcnn.infer import Predictor
from foldcnn.infer.journal import OutputWriteError, ResumableWriter, ResumeMismatchError, journal_path
from tiny_data import one_thread, random_images, tiny_model, write_pngs  # noqa: F401 (one_thread: autouse)

SRC = str(Path(__file__).resolve().parents[1] / "src")
FP = {"model": "m", "inputs": ["x"]}


class Stop(Exception):
    pass


class StopAfter(ResumableWriter):
    """Stops the run after ``n`` committed batches, as a kill between two batches would."""

    def __init__(self, *a, n: int, **k):
        super().__init__(*a, **k)
        self.left = n

    def commit(self, last_index):
        super().commit(last_index)
        self.left -= 1
        if self.left == 0:
            raise Stop


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Images, a video (when PyAV is here) and images again: three fold streams."""
    root = tmp_path_factory.mktemp("journal")
    a = write_pngs(root / "a", random_images(13, seed=1))
    b = write_pngs(root / "b", random_images(8, seed=2))
    items = [str(p) for p in a]
    try:
        import av  # noqa: F401

        from tiny_data import gop_video

        items.append(str(gop_video(root / "v.mp4", frames=23, gop=5)))
    except ImportError:
        pass
    return root, items + [str(p) for p in b]


def _full(root, items, name="full.csv"):
    with Predictor(tiny_model(3), workers=0, batch_size=6) as p, ResumableWriter(root / name, FP) as w:
        p.predict_to(w, items)
    return (root / name).read_bytes()


@pytest.mark.parametrize("stops", [[1], [2, 3], [5], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
def test_stopped_and_resumed_runs_write_the_uninterrupted_bytes(inputs, tmp_path, stops):
    root, items = inputs
    want = _full(tmp_path, items)
    out = tmp_path / "out.csv"
    resume = False
    for n in stops:
        try:
            with Predictor(tiny_model(3), workers=0, batch_size=6) as p, \
                    StopAfter(out, FP, resume=resume, n=n) as w:
                p.predict_to(w, items, resume_after=w.resume_after)
        except Stop:
            pass
        resume = True
        if out.exists():
            break
        partial = out.with_name("out.csv.partial")
        with open(partial, "ab") as f:
            f.write(b"17,torn-row-wri")  # a kill in the middle of a row
    if not out.exists():
        with Predictor(tiny_model(3), workers=0, batch_size=6) as p, ResumableWriter(out, FP, resume=True) as w:
            kept = w.rows
            assert kept > 0 and w.resume_after >= 0
            p.predict_to(w, items, resume_after=w.resume_after)
            assert p.stats.images == w.rows - kept  # only the rest went through the model
    assert out.read_bytes() == want
    assert not journal_path(out).exists() and not out.with_name("out.csv.partial").exists()


def test_resume_refuses_other_runs_and_untrusted_outputs(tmp_path):
    out = tmp_path / "o.jsonl"
    with pytest.raises(Stop):
        with StopAfter(out, FP, n=1) as w:
            w.write_batch([0, 1], ["a", "b"], [None, None], [0, 1], [0.5, 0.25], ["x", "y"])
    with pytest.raises(ResumeMismatchError, match="inputs"):
        ResumableWriter(out, {**FP, "inputs": ["other"]}, resume=True)
    w = ResumableWriter(out, FP, resume=True)
    assert (w.rows, w.resume_after) == (2, 1)
    w.close()
    with pytest.raises(ResumeMismatchError, match="complete"):
        ResumableWriter(out, FP, resume=True)
    lone = tmp_path / "lone.csv"
    lone.with_name("lone.csv.partial").write_text("index\n0\n")
    with pytest.raises(ResumeMismatchError, match="no journal"):
        ResumableWriter(lone, FP, resume=True)
    torn = tmp_path / "torn.csv"
    with pytest.raises(Stop):
        with StopAfter(torn, FP, n=1) as w:
            w.write_batch([0], ["a"], [None], [0], [0.5], ["x"])
    journal_path(torn).write_text('{"format": "foldcnn-predict-jour')  # a journal cut short
    before = torn.with_name("torn.csv.partial").read_bytes()
    with pytest.raises(ResumeMismatchError, match="damaged"):
        ResumableWriter(torn, FP, resume=True)
    short = torn.with_name("torn.csv.partial")
    journal_path(torn).write_text(json.dumps({"format": "foldcnn-predict-journal", "bytes": len(before) + 5,
                                              "rows": 1, "last_index": 0, "fingerprint": FP}))
    with pytest.raises(ResumeMismatchError, match="shorter than its journal"):
        ResumableWriter(torn, FP, resume=True)
    assert short.read_bytes() == before  # refused outputs are left as they were


def test_a_full_disk_stops_with_one_sentence_and_keeps_the_committed_rows(tmp_path, monkeypatch):
    out = tmp_path / "o.csv"
    w = ResumableWriter(out, FP)
    w.write_batch([0, 1], ["a", "b"], [None, None], [0, 1], [0.5, 0.25], ["x", "y"])
    good = out.with_name("o.csv.partial").read_bytes()

    class FullDisk:  # half a row gets out, then the disk is full
        def writerows(self, rows):
            w._file.write("2,c,,x")
            w._file.flush()
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(w, "_csv", FullDisk())
    with pytest.raises(OutputWriteError, match="No space left on device.*--resume"):
        w.write_batch([2, 3], ["c", "d"], [None, None], [0, 1], [0.5, 0.25], ["x", "y"])
    w.close(ok=False)
    assert out.with_name("o.csv.partial").read_bytes().startswith(good) and not out.exists()
    monkeypatch.undo()
    again = ResumableWriter(out, FP, resume=True)  # the torn half row is cut off
    assert again.resume_after == 1 and out.with_name("o.csv.partial").read_bytes() == good
    again.close()


def _onnx_setup(root: Path, n_images: int, videos: int):
    model = tiny_model(3)
    export_onnx(model, root / "m.onnx", class_names=[f"c{i}" for i in range(5)])
    items = [str(p) for p in write_pngs(root / "imgs", random_images(n_images, seed=4))]
    if videos:
        pytest.importorskip("av")
        from tiny_data import gop_video

        for v in range(videos):  # between the images: several fold streams
            items.insert((v + 1) * n_images // (videos + 1), str(gop_video(root / f"v{v}.mp4", frames=40 + 7 * v,
                                                                            gop=8)))
    return items


def _journal_rows(out: Path) -> int:
    try:
        return int(json.loads(journal_path(out).read_text())["rows"])
    except (OSError, ValueError, KeyError):
        return -1


def _kill_and_resume(root: Path, items: list[str], kills: int, seed: int, batch: int = 6) -> int:
    """Run ``foldcnn predict --resume`` in a subprocess and SIGKILL it ``kills`` times, each at a
    random moment after a random number of rows is committed (mid-fold, mid-video, mid-write), then
    let it finish: the output must equal an uninterrupted run's, byte for byte. Returns how many
    kills left committed rows that a resumed run kept."""
    want = root / "want.csv"
    assert main(["predict", str(root / "m.onnx"), "--input", *items, "--out", str(want), "--quiet",
                 "--batch-size", str(batch), "--workers", "0"]) == 0
    total = sum(1 for _ in open(want)) - 1
    out = root / "got.csv"
    cmd = [sys.executable, "-m", "foldcnn", "predict", str(root / "m.onnx"), "--input", *items, "--out", str(out),
           "--quiet", "--batch-size", str(batch), "--workers", "0", "--resume"]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    rng = random.Random(seed)
    kept = 0
    for _ in range(kills):
        resume = journal_path(out).exists()
        before = _journal_rows(out) if resume else 0
        kept += before > 0
        p = subprocess.Popen(cmd if resume else cmd[:-1], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        target = rng.randint(max(before, 0) + 1, total - 1) if before < total - 1 else total
        while p.poll() is None and _journal_rows(out) < target:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
        if out.exists():  # it finished first: start again from nothing
            out.unlink()
    r = subprocess.run(cmd if journal_path(out).exists() else cmd[:-1], env=env, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == want.read_bytes()
    return kept


def test_killed_runs_resume_to_the_same_bytes(tmp_path):
    pytest.importorskip("onnxruntime")
    items = _onnx_setup(tmp_path, 90, videos=1)
    assert _kill_and_resume(tmp_path, items, kills=3, seed=0) >= 1


@pytest.mark.slow
def test_twenty_kills_over_20000_images_and_three_videos(tmp_path):
    pytest.importorskip("onnxruntime")
    items = _onnx_setup(tmp_path, 20000, videos=3)
    assert _kill_and_resume(tmp_path, items, kills=20, seed=1, batch=96) >= 10


def test_cli_resume_refuses_another_model(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    items = _onnx_setup(tmp_path, 7, videos=0)
    export_onnx(tiny_model(3, seed=1), tmp_path / "other.onnx", class_names=[f"c{i}" for i in range(5)])
    out = tmp_path / "o.csv"
    with pytest.raises(Stop):
        with StopAfter(out, {}, n=1) as w:
            w.write_batch([0], ["a"], [None], [0], [0.5], ["x"])
    before = out.with_name("o.csv.partial").read_bytes()
    assert main(["predict", str(tmp_path / "other.onnx"), "--input", *items, "--out", str(out), "--resume",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another run" in err and "model" in err and err.count("\n") == 0
    assert out.with_name("o.csv.partial").read_bytes() == before and not out.exists()
    np.testing.assert_equal(journal_path(out).exists(), True)
