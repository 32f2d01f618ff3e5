"""foldcnn.scrape and `foldcnn scrape`: layouts, rows equal to predict's on each region's crops, events."""

import csv
import json

import numpy as np
import pytest
import torch

from foldcnn import create_model
from foldcnn.checkpoints import save_checkpoint
from foldcnn.cli import main
from foldcnn.data.readers import iter_video_batches
from foldcnn.data.resize import resize_rgb
from foldcnn.infer import Predictor
from foldcnn.scrape import SCRAPE_COLUMNS, Event, LayoutError, ScrapeOptions, Scraper, load_layout, scrape
from tiny_data import gop_video, one_thread  # noqa: F401 - one_thread: a module fixture

FRAMES, VH, VW = 30, 48, 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 30-frame 64x48 video; checkpoints f=2 (12x16 crops, 5 classes) and f=3 (12x16, 4 classes);
    a layout with two regions on the f=2 model (one model, two places) and one resized region."""
    root = tmp_path_factory.mktemp("scrape")
    video = gop_video(root / "v.mp4", frames=FRAMES, gop=10, size=(VH, VW))
    torch.manual_seed(0)
    ck2 = save_checkpoint(root / "ck2", create_model("lol-gold-fraction", fold=2, num_classes=5, input_size=(12, 16)),
                          [f"c{i}" for i in range(4)] + ["other"])
    ck3 = save_checkpoint(root / "ck3", create_model("lol-gold-fraction", fold=3, num_classes=4, input_size=(12, 16)),
                          ["a", "b", "c", "other"])
    layout = {"frame_size": [VW, VH], "regions": [
        {"name": "gold", "box": [0, 0, 16, 12], "checkpoint": "ck2"},
        {"name": "gold2", "box": [40, 30, 16, 12], "checkpoint": "ck2"},
        {"name": "timer", "box": [20, 10, 32, 24], "checkpoint": "ck3", "resize": "bilinear"},
    ]}
    (root / "layout.json").write_text(json.dumps(layout))
    return root, video, ck2, ck3


def _frames(video):
    out = []
    for _, images, _ in iter_video_batches(video, input_size=None):
        out.append(images)
    return np.concatenate(out)


def _crops(frames, box, size=(12, 16), mode="bilinear"):
    x, y, w, h = box
    c = frames[:, :, y:y + h, x:x + w]
    if (h, w) != size:
        c = np.stack([resize_rgb(np.ascontiguousarray(i.transpose(1, 2, 0)), size, mode).transpose(2, 0, 1) for i in c])
    return np.ascontiguousarray(c)


def _rows(items):
    return [i for i in items if not isinstance(i, Event)]


def test_rows_equal_predict_on_each_regions_crops_in_frame_order(setup):
    root, video, ck2, ck3 = setup
    items = list(scrape([str(video)], str(root / "layout.json"), predict_options=None))
    rows = _rows(items)
    assert len(rows) == FRAMES * 3
    assert all(tuple(r) == SCRAPE_COLUMNS for r in rows)
    # one row per (frame, region), in frame order, regions in layout order
    assert [(r["frame"], r["region"]) for r in rows] == [(f, n) for f in range(FRAMES) for n in ("gold", "gold2", "timer")]
    assert [r["index"] for r in rows[::3]] == list(range(FRAMES))
    assert rows[3]["time_s"] == pytest.approx(1 / 30, abs=1e-6)
    frames = _frames(video)
    layout = load_layout(root / "layout.json")
    for region in layout.regions:
        mine = [r for r in rows if r["region"] == region.name]
        with Predictor.from_checkpoint(region.checkpoint, workers=0) as p:
            want = p.predict(_crops(frames, region.box, mode=region.resize))
        assert [(r["class_index"], r["class_name"]) for r in mine] == [(w.class_index, w.class_name) for w in want]
        assert [r["confidence"] for r in mine] == [round(w.confidence, 6) for w in want]


def test_cli_rows_equal_foldcnn_predict_on_the_crops(setup, capsys, tmp_path):
    root, video, ck2, _ = setup
    out = tmp_path / "rows.csv"
    assert main(["scrape", str(video), "--layout", str(root / "layout.json"), "--out", str(out),
                 "--json", str(tmp_path / "s.json")]) == 0
    printed = capsys.readouterr().out
    assert "frames/s end to end" in printed and "read/decode" in printed and "model" in printed
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == FRAMES and summary["rows"] == 3 * FRAMES and summary["dropped_frames"] == 0
    assert set(summary["stages"]) >= {"read/decode", "crop", "model", "write"}
    # one engine per checkpoint: the f=2 model ran both of its regions' crops
    assert summary["engines"][str(ck2)]["crops"] == 2 * FRAMES
    with open(out) as f:
        got = [r for r in csv.DictReader(f) if r["region"] == "gold2"]
    crops = _crops(_frames(video), (40, 30, 16, 12))
    np.save(tmp_path / "crops.npy", crops)
    assert main(["predict", str(ck2), "--input", str(tmp_path / "crops.npy"), "--out", str(tmp_path / "p.csv"),
                 "--workers", "0", "--quiet"]) == 0
    with open(tmp_path / "p.csv") as f:
        want = list(csv.DictReader(f))
    assert [(r["class_name"], r["confidence"]) for r in got] == [(r["class_name"], r["confidence"]) for r in want]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_jsonl_and_parquet_hold_the_same_rows(setup, tmp_path, suffix):
    root, video, _, _ = setup
    assert main(["scrape", str(video), "--layout", str(root / "layout.json"), "--out", str(tmp_path / "r.csv"),
                 "--json", str(tmp_path / "a.json")]) == 0
    assert main(["scrape", str(video), "--layout", str(root / "layout.json"), "--out", str(tmp_path / f"r{suffix}"),
                 "--json", str(tmp_path / "b.json")]) == 0
    with open(tmp_path / "r.csv") as f:
        want = [(int(r["frame"]), r["region"], r["class_name"], float(r["confidence"])) for r in csv.DictReader(f)]
    if suffix == ".jsonl":
        got = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        got = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert list(got[0]) == list(SCRAPE_COLUMNS)
    assert [(r["frame"], r["region"], r["class_name"], r["confidence"]) for r in got] == want


def test_stride_and_two_videos_are_separate_fold_streams(setup):
    root, video, _, _ = setup
    rows = _rows(scrape([str(video), str(video)], str(root / "layout.json"), stride=4))
    frames = list(range(0, FRAMES, 4))
    assert [r["frame"] for r in rows if r["region"] == "gold"] == frames * 2
    assert [r["index"] for r in rows if r["region"] == "gold"] == list(range(2 * len(frames)))
    first = [(r["class_index"], r["confidence"]) for r in rows[:3 * len(frames)]]
    second = [(r["class_index"], r["confidence"]) for r in rows[3 * len(frames):]]
    assert first == second  # the second video's folds are its own (8 frames: the f=3 stream pads each time)


def test_keyframes_reads_only_key_frames(setup):
    root, video, _, _ = setup
    rows = _rows(scrape([str(video)], str(root / "layout.json"), keyframes=True))
    assert sorted({r["frame"] for r in rows}) == [0, 10, 20]


# ---------------------------------------------------------------------------- bad input
def _layout(tmp_path, data) -> str:
    p = tmp_path / "l.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(p)


@pytest.mark.parametrize("data, message", [
    ("{not json", "is not valid JSON"),
    ({"frame_size": [64, 48], "regions": [{"name": "a", "box": [60, 0, 16, 12], "checkpoint": "ck2"}]},
     "is not inside the 64x48 frame"),
    ({"frame_size": [64, 48], "regions": [{"name": "a", "box": [0, 0, 16, 12], "checkpoint": "nowhere"}]},
     "does not exist"),
    ({"frame_size": [64, 48], "regions": [{"name": "a", "box": [0, 0, 16, 12], "checkpoint": "broken"}]},
     "cannot load checkpoint"),
    ({"frame_size": [64, 48], "regions": [{"name": "a", "box": [0, 0, 16, 12], "checkpoint": "grey"}]},
     "takes 1-channel images but video frames are RGB"),
    ({"frame_size": [640, 480], "regions": [{"name": "a", "box": [0, 0, 16, 12], "checkpoint": "ck2"}]},
     "pass --scale-layout"),
    ({"frame_size": [64, 48], "regions": [{"name": "a", "box": [0, 0, 16, 12], "checkpoint": "ck2"},
                                          {"name": "a", "box": [0, 0, 16, 12], "checkpoint": "ck2"}]},
     "is named twice"),
])
def test_bad_layouts_are_one_sentence_exit_2(setup, capsys, tmp_path, data, message):
    root, video, ck2, _ = setup
    import shutil

    shutil.copytree(ck2, tmp_path / "ck2")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "grey", create_model("lol-gold-fraction", fold=1, num_classes=3,
                                                    input_size=(12, 16), in_channels=1), ["a", "b", "other"])
    code = main(["scrape", str(video), "--layout", _layout(tmp_path, data), "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_scale_layout_scales_the_boxes(setup, tmp_path):
    root, video, ck2, _ = setup
    data = {"frame_size": [128, 96], "regions": [{"name": "a", "box": [0, 0, 32, 24], "checkpoint": str(ck2)}]}
    with pytest.raises(LayoutError, match="--scale-layout"):
        list(scrape([str(video)], _layout(tmp_path, data)))
    rows = _rows(scrape([str(video)], _layout(tmp_path, data), scale_layout=True))
    with Predictor.from_checkpoint(ck2, workers=0) as p:
        want = p.predict(_crops(_frames(video), (0, 0, 16, 12)))
    assert [r["class_index"] for r in rows] == [w.class_index for w in want]


def test_checkpoint_names_are_replaced_by_checkpoints_flag(setup, tmp_path, capsys):
    root, video, ck2, _ = setup
    data = {"frame_size": [64, 48], "regions": [{"name": "a", "box": [0, 0, 16, 12], "checkpoint": "lol-gold"}]}
    lay = _layout(tmp_path, data)
    assert main(["scrape", str(video), "--layout", lay, "--out", str(tmp_path / "o.csv")]) == 2
    assert "checkpoint" in capsys.readouterr().err
    assert main(["scrape", str(video), "--layout", lay, "--out", str(tmp_path / "o.csv"),
                 "--checkpoints", f"lol-gold={ck2}"]) == 0


def test_bad_options_are_refused(setup, tmp_path, capsys):
    root, video, _, _ = setup
    lay = str(root / "layout.json")
    assert main(["scrape", str(video), "--layout", lay, "--out", str(tmp_path / "o.txt")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    with pytest.raises(ValueError, match="hold"):
        ScrapeOptions(hold=0)
    with pytest.raises(SystemExit):  # the options scrape cannot honour have no flag
        main(["scrape", str(video), "--layout", lay, "--out", str(tmp_path / "o.csv"), "--partial", "fallback"])


def test_engines_are_shared_between_regions(setup):
    root, _, _, _ = setup
    with Scraper(load_layout(root / "layout.json")) as s:
        assert len(s.engines) == 2


def test_region_cropper_gives_the_full_frames_pixels_converting_only_the_boxes(setup):
    """Boxes at odd places and sizes: the crops equal the full frame's RGB conversion, cut."""
    import av

    from foldcnn.data.frames import RegionCropper, rgb_converter

    _, video, _, _ = setup
    boxes = [(0, 0, 16, 12), (3, 5, 17, 9), (47, 35, 17, 13), (1, 1, 1, 1)]
    cropper = RegionCropper(lambda w, h: boxes, batch=4)
    ref = rgb_converter()
    want = [[] for _ in boxes]
    with av.open(str(video)) as c:
        for frame in c.decode(video=0):
            cropper.add(frame)
            rgb = ref(frame)
            for k, (x, y, w, h) in enumerate(boxes):
                want[k].append(rgb[y:y + h, x:x + w].transpose(2, 0, 1))
    got = cropper.take()
    assert [g.shape for g in got] == [(FRAMES, 3, h, w) for _, _, w, h in boxes]
    assert all(np.array_equal(g, np.stack(w)) for g, w in zip(got, want))
    assert all(tall is not None for _, tall in cropper._geometry.values())  # the fast way was taken


def test_plots_a_png_per_region_with_the_truth(setup, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    root, video, _, _ = setup
    truth = tmp_path / "truth.csv"
    truth.write_text("frame,region,class\n" + "".join(f"{f},gold,c1\n" for f in range(FRAMES)))
    assert main(["scrape", str(video), "--layout", str(root / "layout.json"), "--out", str(tmp_path / "r.csv"),
                 "--plots", "--truth", str(truth)]) == 0
    assert sorted(p.name for p in tmp_path.glob("r.*.png")) == ["r.gold.png", "r.gold2.png", "r.timer.png"]
    assert "plots:" in capsys.readouterr().out
    assert main(["scrape", str(video), "--layout", str(root / "layout.json"), "--out", "-", "--plots"]) == 2


# ------------------------------------------------------------------------------- --resume
class _Killed(BaseException):
    """Stands for the kill: raised from inside the writing loop, caught by nothing in foldcnn."""


def _scrape_args(root, video, out, events, *extra):
    return ["scrape", str(video), "--layout", str(root / "layout.json"), "--out", str(out), "--events", str(events),
            "--hold", "1", *extra]


@pytest.mark.parametrize("kill_at, rollback", [(7, False), (40, False), (61, True)])
def test_resume_after_a_kill_ends_with_the_uninterrupted_bytes(setup, tmp_path, monkeypatch, kill_at, rollback):
    """Killed mid-frame (and, with rollback, after writing rows its journal never committed, as a
    SIGKILL between two commits leaves it), a --resume run ends with exactly the bytes of an
    uninterrupted run, rows and events, each row once."""
    from foldcnn.scrape import outputs

    root, video, _, _ = setup
    ref_rows, ref_events = tmp_path / "ref.csv", tmp_path / "ref-events.csv"
    assert main(_scrape_args(root, video, ref_rows, ref_events)) == 0
    monkeypatch.setattr(outputs, "COMMIT_FRAMES", 4)
    out, events = tmp_path / "rows.csv", tmp_path / "events.csv"
    journals = []
    commit = outputs.ScrapeJournal.commit

    def remember(self):
        commit(self)
        journals.append(self.path.read_bytes())

    write = outputs.TableWriter.write

    def dies(self, row):
        if self.columns[0] == "index" and self.rows == kill_at:
            raise _Killed()
        write(self, row)

    monkeypatch.setattr(outputs.ScrapeJournal, "commit", remember)
    monkeypatch.setattr(outputs.TableWriter, "write", dies)
    with pytest.raises(_Killed):
        main(_scrape_args(root, video, out, events))
    monkeypatch.setattr(outputs.TableWriter, "write", write)
    partial = out.with_name(out.name + ".partial")
    assert not out.exists() and partial.exists()
    if rollback:  # the last commit never happened: the file holds rows its journal does not count
        (tmp_path / "rows.csv.journal").write_bytes(journals[-3])
    with open(partial, "ab") as f:
        f.write(b"9,torn row")  # a row cut short by the kill
    assert main(_scrape_args(root, video, out, events, "--resume")) == 0
    assert out.read_bytes() == ref_rows.read_bytes()
    assert events.read_bytes() == ref_events.read_bytes()
    assert not (tmp_path / "rows.csv.journal").exists() and not partial.exists()


def test_resume_is_refused_with_one_sentence_and_the_files_kept(setup, tmp_path, capsys, monkeypatch):
    root, video, _, _ = setup
    out, events = tmp_path / "rows.csv", tmp_path / "events.csv"
    assert main(_scrape_args(root, video, out, events, "--resume")) == 2  # nothing to resume
    assert "nothing to resume" in capsys.readouterr().err
    from foldcnn.scrape import outputs

    def dies(self, row):
        raise _Killed()

    monkeypatch.setattr(outputs.TableWriter, "write", dies)
    with pytest.raises(_Killed):
        main(_scrape_args(root, video, out, events))
    monkeypatch.undo()
    partial = out.with_name(out.name + ".partial")
    before = partial.read_bytes()
    assert main(_scrape_args(root, video, out, events, "--resume", "--stride", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert "written by another scrape" in err and "scrape" in err and len(err.splitlines()) == 1
    assert partial.read_bytes() == before
    for bad in (["--out", str(tmp_path / "r.parquet")],):
        args = _scrape_args(root, video, out, events, "--resume")
        args[args.index("--out") + 1] = bad[1]
        assert main(args) == 2
        assert "--resume continues a local scrape" in capsys.readouterr().err
