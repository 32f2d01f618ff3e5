"""The decode pipeline: processes, threads and inline decoding give the same rows; corrupt files at
random positions give exactly one row or one skipped entry each, in order, whatever the workers;
a decoder that dies fails the run naming its files; the per-stage summary adds up."""

import os
import random
import time

import numpy as np
import pytest
import torch

from foldcnn.data.readers import ImageReadError
from foldcnn.checkpoints import save_checkpoint
from foldcnn.infer import Predictor
from foldcnn.infer import sources
from foldcnn.infer.pipeline import DecoderDiedError
from tiny_data import one_thread, random_images, tiny_model, write_pngs  # noqa: F401 (one_thread: autouse)

N = 70  # more than two decode jobs of FILES_PER_JOB files (in threads)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    x = random_images(N, seed=5)
    write_pngs(root / "png", x)
    return root / "png", x


@pytest.mark.parametrize("decoders,workers", [("processes", 1), ("processes", 3), ("threads", 2), ("auto", 0)])
def test_every_decoder_gives_the_rows_of_the_arrays(folder, decoders, workers):
    path, x = folder
    with Predictor(tiny_model(4), workers=workers, decoders=decoders, batch_size=8) as p:
        got = p.predict(path)
        assert p.stats.decoders == ("inline" if workers == 0 else decoders)
        again = p.predict(path)  # the process pool is kept for the next call
        want = p.predict(x)
    assert [g.index for g in got] == list(range(N))
    assert [g.source for g in got] == [str(path / f"{i:05d}.png") for i in range(N)]
    np.testing.assert_array_equal(np.stack([g.probabilities for g in got]), np.stack([w.probabilities for w in want]))
    assert [g.class_index for g in again] == [g.class_index for g in got]


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
@pytest.mark.parametrize("decoders", ["processes", "threads"])
def test_corrupt_files_at_random_positions_one_row_or_one_skip_each(tmp_path, workers, decoders):
    rng = random.Random(workers * 10 + len(decoders))
    n = 75
    x = random_images(n, seed=workers)
    paths = write_pngs(tmp_path, x)
    bad = sorted(rng.sample(range(n), 9))
    for i in bad:
        data = paths[i].read_bytes()
        paths[i].write_bytes(data[:len(data) // 3] if i % 2 else b"not a png")
    inputs = [str(p) for p in paths]
    with Predictor(tiny_model(3), workers=workers, decoders=decoders, on_error="skip", batch_size=6) as p:
        got = p.predict(inputs)
        skipped = p.skipped
        good = [i for i in range(n) if i not in bad]
        want = p.predict(x[good])
    assert [g.index for g in got] == good
    assert [s.index for s in skipped] == bad and [s.source for s in skipped] == [inputs[i] for i in bad]
    assert sorted([g.index for g in got] + [s.index for s in skipped]) == list(range(n))
    np.testing.assert_array_equal(np.stack([g.probabilities for g in got]), np.stack([w.probabilities for w in want]))
    with Predictor(tiny_model(3), workers=workers, decoders=decoders, batch_size=6) as p:
        with pytest.raises(ImageReadError, match=str(paths[bad[0]].name)):
            p.predict(inputs)


def _die_on_crash(paths, spec):
    if any("crash" in p for p in paths):
        os._exit(3)  # what a segfaulting decoder looks like from here
    return _real_decode(paths, spec)


_real_decode = sources.decode_files


def test_a_dying_decoder_fails_the_run_naming_its_files(folder, tmp_path, monkeypatch):
    path, x = folder
    files = sorted(path.iterdir())
    crash = tmp_path / "crash.png"
    crash.write_bytes(files[0].read_bytes())
    inputs = files[:40] + [crash] + files[40:]
    monkeypatch.setattr(sources, "decode_files", _die_on_crash)
    monkeypatch.setattr(sources, "FILES_PER_PROCESS_JOB", 32)  # jobs of 32 files: the second one holds crash.png
    with Predictor(tiny_model(2), workers=2, decoders="processes", on_error="skip") as p:
        with pytest.raises(DecoderDiedError, match=f"died while reading the 32 file.*{files[32].name} .. "):
            p.predict(inputs)  # the job holding crash.png: files[32..39], crash, files[40..62]
        assert [g.index for g in p.predict(files)] == list(range(N))  # a fresh pool after the death


def test_stage_summary_adds_up(folder, tmp_path, capsys):
    path, _ = folder
    with Predictor(tiny_model(4), workers=2, decoders="processes", batch_size=16) as p:
        for _ in p.predict_iter(path):
            pass
        s = p.stats
    stages = s.stages()
    assert set(stages) == {"read/decode", "model", "write", "other"}
    assert sum(v["seconds"] for v in stages.values()) == pytest.approx(s.seconds_total, rel=1e-6)
    assert 0 < s.seconds_decode_work and s.decoders == "processes" and s.workers == 2
    assert s.decode_bound == (s.seconds_decode > s.seconds_model)
    d = s.to_dict()
    assert d["stages"]["model"]["images_per_s"] == pytest.approx(N / s.seconds_model)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    pytest.importorskip("av")
    from foldcnn.data.video import generate_video

    root = tmp_path_factory.mktemp("videos")
    paths = [generate_video(root / f"v{i}", 70 + 9 * i, seed=i, size=(32, 32), progress=False).video_path
             for i in range(3)]
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    return paths, broken


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_several_videos_decoded_at_once_give_the_sequential_rows(folder, videos, workers):
    path, _ = folder
    (v0, v1, v2), broken = videos
    inputs = [v0, path / "00000.png", v1, broken, v2, path / "00001.png"]
    with Predictor(tiny_model(4), workers=0, on_error="skip", batch_size=16) as p:
        want = [(q.index, q.source, q.frame, q.probabilities.tobytes()) for q in p.predict(inputs, stride=2)]
        want_skipped = [(s.index, s.source) for s in p.skipped]
    with Predictor(tiny_model(4), workers=workers, on_error="skip", batch_size=16) as p:
        got = [(q.index, q.source, q.frame, q.probabilities.tobytes()) for q in p.predict(inputs, stride=2)]
        assert [(s.index, s.source) for s in p.skipped] == want_skipped == [(35 + 1 + 40, str(broken))]  # v0: 35 kept frames, a png, v1: 40
    assert got == want  # probabilities too: each video folded only with its own frames, as in order
    assert sorted({q[1] for q in got}) == sorted(str(x) for x in (v0, v1, v2, path / "00000.png", path / "00001.png"))


def test_keyframes_are_the_key_frames_of_the_full_decode(videos):
    av = pytest.importorskip("av")
    from foldcnn.data.readers import iter_video_frames

    v0 = videos[0][0]
    with av.open(str(v0)) as c:
        keys = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    full = dict(iter_video_frames(v0, input_size=(12, 16)))
    got = list(iter_video_frames(v0, input_size=(12, 16), keyframes=True))
    assert [i for i, _ in got] == keys and keys[0] == 0
    for i, img in got:
        assert torch.equal(img, full[i])
    with Predictor(tiny_model(1), keyframes=True, workers=1) as p:
        assert [q.frame for q in p.predict(v0)] == keys


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_batched_rows_equal_the_per_image_rows(folder, videos, tmp_path, suffix):
    from foldcnn.infer import PredictionWriter

    path, _ = folder
    inputs = [videos[0][0], path / "00000.png", videos[1], path / "00003.png"]
    inputs[2] = videos[0][1]  # the broken video: one skipped entry
    with Predictor(tiny_model(3), on_error="skip", workers=2, batch_size=9) as p:
        with PredictionWriter(tmp_path / f"a{suffix}") as w:
            w.write_all(p.predict_iter(inputs, stride=3))
        with PredictionWriter(tmp_path / f"b{suffix}") as w:
            assert p.predict_to(w, inputs, stride=3) == w.rows > 0
    assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()


def test_cli_prints_one_line_per_stage_and_writes_the_json_summary(folder, tmp_path, capsys, monkeypatch):
    import json

    from foldcnn.cli import main

    path, _ = folder
    monkeypatch.setattr(sources, "FILES_PER_PROCESS_JOB", 32)  # two jobs of 32 files, a tail of 6 in a thread
    ck = save_checkpoint(tmp_path / "ck", tiny_model(2), [f"c{i}" for i in range(5)])
    out, js = tmp_path / "p.csv", tmp_path / "s.json"
    assert main(["predict", str(ck), "--input", str(path), "--out", str(out), "--quiet", "--json", str(js),
                 "--batch-size", "8", "--decoders", "processes", "--workers", "2"]) == 0
    text = capsys.readouterr().out
    for stage in ("read/decode:", "model:", "write:"):
        assert any(line.strip().startswith(stage) and "images/s" in line and "of wall time" in line
                   for line in text.splitlines()), stage
    assert "64 images in 2 decoding processes" in text
    summary = json.loads(js.read_text())
    assert summary["images"] == N and set(summary["stages"]) >= {"read/decode", "model", "write"}
    assert summary["options"]["decoders"] == "processes" and summary["images_decoded_in_processes"] == N - N % 32  # a short tail: a thread
    assert main(["predict", str(ck), "--input", str(path), "--out", str(out), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == N  # --json alone: the summary on stdout, nothing else


def test_stopping_early_releases_decoders(folder, videos):
    import threading

    path, _ = folder
    (v0, v1, v2), _ = videos
    before = threading.active_count()
    with Predictor(tiny_model(2), workers=2, decoders="processes", batch_size=4) as p:
        for source in (path, [v0, v1, v2]):
            it = p.predict_iter(source)
            assert [next(it).index for _ in range(3)] == [0, 1, 2]
            it.close()  # the feeder, the videos decoding ahead and pending jobs stop
        assert len(p.predict(path)) == N  # and the Predictor still works
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
