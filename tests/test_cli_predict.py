import csv
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from foldcnn import create_model
from foldcnn.cli import main
from foldcnn.infer import Predictor
from foldcnn.checkpoints import save_checkpoint

H, W, K = 12, 16, 5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A fold-3 checkpoint, an unfolded one of the same task, and a folder of 7 images (one 20x30)."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    names = [f"c{i}" for i in range(K)]
    ck = save_checkpoint(root / "ck", create_model("lol-gold-fraction", fold=3, num_classes=K, input_size=(H, W)),
                         names)
    fb = save_checkpoint(root / "fb", create_model("lol-gold-fraction", num_classes=K, input_size=(H, W)), names)
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / "imgs" / "z_big.png")
    return root, ck, fb


def _expected(ck, source, stride=1, **kw):
    with Predictor.from_checkpoint(ck, workers=0, **kw) as p:
        return p.predict(source, stride=stride)


def test_csv_one_row_per_image_in_order_and_summary(setup, capsys):
    root, ck, _ = setup
    out = root / "preds.csv"
    assert main(["predict", str(ck), "--input", str(root / "imgs"), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    want = _expected(ck, root / "imgs")
    assert len(rows) == len(want) == 7
    assert [r["source"] for r in rows] == [p.source for p in want] == sorted(str(x) for x in (root / "imgs").iterdir())
    assert [(r["class_name"], int(r["class_index"]), r["frame"]) for r in rows] == \
        [(p.class_name, p.class_index, "") for p in want]
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], [p.confidence for p in want], atol=1e-5)
    text = capsys.readouterr().out
    for words in ("7 images", "images/s end to end", "images/s model only", "backend eager/fp32",
                  "2 padded images (waste 22.22%)", "skipped 0 file(s)", f"wrote {out}"):
        assert words in text


def test_jsonl_glob_fallback_and_skipped_files(setup, capsys):
    root, ck, fb = setup
    (root / "imgs2").mkdir()
    for i in range(6):
        (root / "imgs2" / f"{i}.png").write_bytes((root / "imgs" / f"{i}.png").read_bytes())
    (root / "imgs2" / "2.png").write_bytes(b"broken")
    out = root / "preds.jsonl"
    args = ["predict", str(ck), "--input", str(root / "imgs2" / "*.png"), "--out", str(out), "--quiet",
            "--on-error", "skip", "--fallback", str(fb), "--workers", "1"]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    kept = [root / "imgs2" / f"{i}.png" for i in (0, 1, 3, 4, 5)]
    assert [r["index"] for r in rows] == [0, 1, 3, 4, 5] and [r["source"] for r in rows] == list(map(str, kept))
    text = capsys.readouterr().out
    assert "skipped 1 file(s):" in text and "2.png" in text
    # 5 images, fold 3: one folded input, then 2 images through the unfolded fallback, no padding
    assert "0 padded images" in text and "2 images through the fallback model" in text
    want = _expected(ck, kept, partial="fallback", fallback=fb)
    assert [(r["class_index"], r["frame"]) for r in rows] == [(p.class_index, None) for p in want]


def test_video_input(setup):
    pytest.importorskip("av")
    from foldcnn.data.video import generate_video

    root, ck, _ = setup
    video = generate_video(root / "v", 20, seed=2, size=(32, 32), progress=False).video_path
    out = root / "video.csv"
    assert main(["predict", str(ck), "--input", str(video), "--out", str(out), "--stride", "3", "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["frame"]) for r in rows] == list(range(0, 20, 3)) and {r["source"] for r in rows} == {str(video)}
    assert [int(r["class_index"]) for r in rows] == [p.class_index for p in _expected(ck, video, stride=3)]


def test_truncated_video_is_incomplete_not_success(setup, capsys):
    pytest.importorskip("av")
    from tiny_data import truncated_video

    root, ck, _ = setup
    cut, _ = truncated_video(root / "cut.mp4", frames=30, keep=12)
    out = root / "cut.csv"
    base = ["predict", str(ck), "--input", str(cut), "--out", str(out), "--quiet"]
    assert main(base) == 2  # the default --on-error raise: one sentence naming the file and the frame
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut.mp4 is truncated: decoding stopped at frame 12" in err[0] and not out.exists()
    assert main(base + ["--on-error", "skip"]) == 1  # rows kept, listed as incomplete, exit 1
    captured = capsys.readouterr()
    assert [int(r["frame"]) for r in csv.DictReader(out.open())] == list(range(12))
    assert "incomplete 1 video(s)" in captured.out and "skipped 0 file(s)" in captured.out
    assert "--allow-partial" in captured.err
    assert main(base + ["--on-error", "skip", "--allow-partial"]) == 0


@pytest.mark.parametrize("args, message", [
    (["predict", "NOPE", "--input", "x", "--out", "o.csv"], "checkpoint NOPE does not exist"),
    (["predict", "{ck}", "--input", "{root}/imgs", "--out", "o.txt"], "--out must end in .csv or .jsonl"),
    (["predict", "{ck}", "--input", "{root}/missing", "--out", "{root}/o.csv", "--quiet"], "no such file"),
    (["predict", "{ck}", "--input", "{root}/imgs", "--out", "{root}/o.csv", "--partial", "fallback"],
     "needs --fallback"),
    (["predict", "{ck}", "--input", "{root}/imgs", "--out", "{root}/o.csv", "--no-resize", "--quiet"],
     "z_big.png: it is 20x30"),
    (["predict", "{ck}", "--input", "{root}/imgs", "--out", "{root}/imgs/0.png/o.csv", "--quiet"], "0.png"),
])
def test_errors_are_one_line(setup, capsys, args, message):
    root, ck, _ = setup
    assert main([a.format(ck=ck, root=root) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("foldcnn predict: error:") and message in err[0]


def test_ray_engine_missing_gives_a_clear_error(setup, capsys, monkeypatch):
    root, ck, _ = setup
    monkeypatch.setitem(sys.modules, "foldcnn.scaleout.ray_engine", None)  # import fails as if absent
    assert main(["predict", str(ck), "--input", str(root / "imgs"), "--out", str(root / "ray"),
                 "--engine", "ray", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--engine ray needs" in err and "pip install" in err and len(err.strip().splitlines()) == 1


def test_ray_engine_unreachable_address_is_one_line(setup, capsys, monkeypatch):
    root, ck, _ = setup
    import types

    def unreachable(*args, address=None, **kwargs):
        raise ConnectionError(f"cannot reach the Ray cluster at {address!r}; start one with 'ray start --head'")

    fake = types.ModuleType("foldcnn.scaleout.ray_engine")
    fake.run_ray_predict = unreachable  # what the engine raises for an address nobody listens on
    monkeypatch.setitem(sys.modules, "foldcnn.scaleout.ray_engine", fake)
    assert main(["predict", str(ck), "--input", str(root / "imgs"), "--out", str(root / "ray"),
                 "--engine", "ray", "--address", "127.0.0.1:9", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the Ray cluster at '127.0.0.1:9'" in err[0]


def test_stage_lines_name_the_bottleneck_and_only_useful_advice(monkeypatch):
    """A decode-bound run says so; it suggests more --workers only when cores are left for them."""
    from foldcnn.backends import base
    from foldcnn.cli.predict import _stage_lines
    from foldcnn.infer.results import PredictStats

    monkeypatch.setattr(base, "default_threads", lambda threads: 4)
    s = PredictStats(batch_size=8, images=64, seconds_total=2.0, seconds_decode=1.5, seconds_model=0.5,
                     decoders="processes", workers=2, images_decoded_in_processes=64, seconds_decode_work=0.8)
    lines = _stage_lines(s)
    assert lines[0].startswith("  read/decode: 1.50 s waiting for input (64 images in 2 decoding processes")
    assert "decode-bound" in lines[-1] and "more --workers (now 2, on 4 cores)" in lines[-1]
    s.workers = 4
    assert "--workers" not in _stage_lines(s)[-1] and ".npy" in _stage_lines(s)[-1]
    from foldcnn.data import readers

    monkeypatch.setattr(readers, "_spng", False)  # without the png extra, it says how to get it
    assert "foldcnn[png]" in _stage_lines(s)[-1]
    monkeypatch.setattr(readers, "_spng", object())
    assert "foldcnn[png]" not in _stage_lines(s)[-1]
    s.seconds_decode = 0.1
    assert not any("decode-bound" in line for line in _stage_lines(s))
