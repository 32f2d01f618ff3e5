"""Live inputs of `foldcnn scrape`: standard input, URLs, --max-wait-ms, --on-lag, broken streams."""

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from foldcnn.cli import main
from foldcnn.scrape import Event, load_layout, scrape
from foldcnn.scrape import pipeline, sources
from test_scrape import FRAMES, setup  # noqa: F401 - the module fixture: a tiny video, checkpoints, layout
from tiny_data import one_thread, truncated_video  # noqa: F401


def _to_ts(video: Path) -> Path:
    """The same H.264 stream in an MPEG-TS container (what a live pipe carries)."""
    import av

    out = video.with_suffix(".ts")
    with av.open(str(video)) as src, av.open(str(out), "w", format="mpegts") as dst:
        s = src.streams.video[0]
        o = dst.add_stream_from_template(s)
        for p in src.demux(s):
            if p.dts is not None:
                p.stream = o
                dst.mux(p)
    return out


def _rows(items):
    return [i for i in items if not isinstance(i, Event)]


@contextlib.contextmanager
def _stdin(data: bytes, step: int | None = None, pause_s: float = 0.0):
    """File descriptor 0 reads ``data`` from a pipe, written by a thread (``step`` bytes at a
    time, ``pause_s`` apart: a slow live stream)."""
    r, w = os.pipe()
    saved = os.dup(0)

    def write():
        try:
            for a in range(0, len(data), step or len(data)):
                os.write(w, data[a:a + (step or len(data))])
                time.sleep(pause_s)
        finally:
            os.close(w)

    os.dup2(r, 0)
    os.close(r)
    t = threading.Thread(target=write, daemon=True)
    t.start()
    try:
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        t.join()


def test_stdin_rows_equal_the_files(setup, tmp_path, capsys):  # noqa: F811 - the imported fixture
    root, video, _, _ = setup
    want = _rows(scrape([str(video)], str(root / "layout.json")))
    with _stdin(_to_ts(video).read_bytes()):
        code = main(["scrape", "-", "--layout", str(root / "layout.json"), "--out", "-", "--max-wait-ms", "60000",
                     "--json", str(tmp_path / "s.json")])
    assert code == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    key = ("frame", "region", "class_index", "confidence", "time_s")
    assert [tuple(g[k] for k in key) for g in got] == [tuple(w[k] for k in key) for w in want]
    assert {g["source"] for g in got} == {"-"}
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["dropped_frames"] == 0 and summary["latency_ms"]["frames"] == FRAMES


def test_max_wait_flushes_a_partial_fold_of_a_slow_stream(setup, tmp_path, capsys):  # noqa: F811
    """A stream that arrives slowly (a few MPEG-TS packets every 40 ms): with --max-wait-ms 5 a
    reading comes out before its fold-mates arrive (its fold padded), one row per frame and region still."""
    root, video, _, _ = setup
    with _stdin(_to_ts(video).read_bytes(), step=188 * 4, pause_s=0.04):
        code = main(["scrape", "-", "--layout", str(root / "layout.json"), "--out", "-", "--max-wait-ms", "5",
                     "--json", str(tmp_path / "s.json")])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["frame"], r["region"]) for r in rows] == [(f, n) for f in range(FRAMES) for n in ("gold", "gold2", "timer")]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["padded_crops"] > 0  # partial folds were run without waiting for their fold-mates


@pytest.mark.parametrize("on_lag", ["drop", "block"])
def test_on_lag_drops_are_counted_or_block(setup, monkeypatch, on_lag):  # noqa: F811
    root, video, _, _ = setup
    ts = _to_ts(video)
    monkeypatch.setattr(sources, "LIVE_QUEUE", 2)
    slow = pipeline._Engine.run

    def run(self, crops):
        time.sleep(0.03)
        return slow(self, crops)

    monkeypatch.setattr(pipeline._Engine, "run", run)
    with pipeline.Scraper(load_layout(root / "layout.json"), pipeline.ScrapeOptions(on_lag=on_lag)) as s:
        rows = _rows(s.run([f"file://{ts}"]))
        stats = s.stats
    assert stats.frames + stats.dropped_frames == FRAMES
    assert len(rows) == 3 * stats.frames
    if on_lag == "drop":
        assert stats.dropped_frames > 0 and stats.sources[0]["dropped_frames"] == stats.dropped_frames
    else:
        assert stats.dropped_frames == 0


def test_a_broken_stream_keeps_its_rows_and_exits_1(setup, tmp_path, capsys):  # noqa: F811
    root, _, ck2, _ = setup
    cut, _ = truncated_video(tmp_path / "cut.mp4", frames=40, keep=17, size=(48, 64))
    layout = tmp_path / "l.json"
    layout.write_text(json.dumps({"frame_size": [64, 48], "regions": [
        {"name": "a", "box": [0, 0, 16, 12], "checkpoint": str(ck2)}]}))
    out = tmp_path / "rows.csv"
    code = main(["scrape", str(cut), "--layout", str(layout), "--out", str(out), "--json", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 1
    assert str(cut) in err and "frame 17" in err and "Traceback" not in err
    assert len(out.read_text().splitlines()) == 1 + 17  # header + every frame before the break
    assert json.loads((tmp_path / "s.json").read_text())["error"]


def test_stdin_that_is_not_video_is_one_sentence(setup, tmp_path, capsys):  # noqa: F811
    root, _, _, _ = setup
    with _stdin(bytes(range(256)) * 40):
        code = main(["scrape", "-", "--layout", str(root / "layout.json"), "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "standard input" in err and "Traceback" not in err
