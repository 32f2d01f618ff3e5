"""foldcnn.data.screens (`foldcnn data screens`): synthetic HUD videos with their layout and truth."""

import csv
import json

import numpy as np
import pytest
import torch

from foldcnn import create_model
from foldcnn.checkpoints import save_checkpoint
from foldcnn.cli import main
from foldcnn.data.game_tasks import game_task
from foldcnn.data.readers import iter_video_batches
from foldcnn.data.game_tasks import OTHER
from foldcnn.data.screens import GAMES, _paint, _RegionPainter, screen_frames, write_screens
from foldcnn.scrape import Event, load_layout, scrape
from tiny_data import one_thread  # noqa: F401


def _truth(d):
    with open(d / "truth.csv") as f:
        return [(int(r["frame"]), r["region"], r["class"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("game", list(GAMES))
def test_screens_truth_layout_and_values_evolve(tmp_path, game):
    m = write_screens(tmp_path / game, game, seconds=4, fps=5, size=(320, 180), seed=1)
    truth = _truth(tmp_path / game)
    regions = GAMES[game]
    assert len(truth) == 20 * len(regions) == m["frames"] * len(regions)
    layout = json.loads((tmp_path / game / "layout.json").read_text())
    assert layout["frame_size"] == [320, 180] and [r["name"] for r in layout["regions"]] == [r.name for r in regions]
    for r, spec in zip(layout["regions"], regions):
        task = game_task(spec.task)
        assert r["checkpoint"] == spec.task and tuple(r["box"][3:1:-1]) == task.size  # box (w, h) = the crop size
        classes = [c for _, name, c in truth if name == r["name"]]
        assert set(classes) <= set(task.classes)
        values = [int(c) for c in classes if c != "other"]
        if spec.task in ("apex-squad-count", "sot-timer"):
            assert values == sorted(values, reverse=True)  # squads drop, the countdown runs down
        elif spec.task != "lol-gold-fraction":  # (the digit after the point wraps)
            assert values == sorted(values)  # clocks, gold and coins rise
    frames = np.concatenate([b for _, b, _ in iter_video_batches(tmp_path / game / "video.mp4", input_size=None)])
    assert frames.shape == (20, 3, 180, 320)


def test_same_seed_same_truth_other_seed_differs(tmp_path):
    write_screens(tmp_path / "a", "lol", seconds=2, fps=5, size=(320, 180), seed=3)
    write_screens(tmp_path / "b", "lol", seconds=2, fps=5, size=(320, 180), seed=3)
    write_screens(tmp_path / "c", "lol", seconds=2, fps=5, size=(320, 180), seed=4)
    assert _truth(tmp_path / "a") == _truth(tmp_path / "b") != _truth(tmp_path / "c")


def test_cli_then_scrape_with_task_checkpoints(tmp_path, capsys):
    d = tmp_path / "apex"
    assert main(["data", "screens", "--game", "apex", "--seconds", "2", "--fps", "6", "--input-size", "180x320",
                 "--out", str(d), "--quiet"]) == 0
    assert main(["data", "screens", "--game", "apex", "--seconds", "2", "--out", str(d), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    torch.manual_seed(0)
    task = game_task("apex-squad-count")
    ck = save_checkpoint(tmp_path / "ck", create_model("apex-squad-count", fold=2), list(task.classes))
    layout = load_layout(d / "layout.json", checkpoints={"apex-squad-count": str(ck)})
    items = list(scrape([str(d / "video.mp4")], layout))
    rows = [i for i in items if not isinstance(i, Event)]
    assert [(r["frame"], r["region"]) for r in rows] == [(f, n) for f, n, _ in _truth(d)]
    assert {r["class_name"] for r in rows} <= set(task.classes)


def test_the_written_video_and_truth_are_the_drawn_frames(tmp_path):
    """truth.csv is screen_frames' classes; the decoded crops differ from the drawn frames' own
    4:2:0 conversion by little (the HUD's noise survives the encoder: >= 48 dB PSNR)."""
    import av

    write_screens(tmp_path / "s", "sot", seconds=2, fps=5, size=(320, 180), seed=1)
    regions, frames = screen_frames("sot", seconds=2, fps=5, size=(320, 180), seed=1)
    drawn = list(frames)
    assert [(f, r["name"], c) for f, (_, cs) in enumerate(drawn) for r, c in zip(regions, cs)] == _truth(tmp_path / "s")
    decoded = np.concatenate([b for _, b, _ in iter_video_batches(tmp_path / "s" / "video.mp4", input_size=None)])
    for f, (frame, _) in enumerate(drawn):
        yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p").to_ndarray(format="rgb24")
        for r in regions:
            x, y, w, h = r["box"]
            err = np.mean((yuv[y:y + h, x:x + w].astype(float) - decoded[f, :, y:y + h, x:x + w].transpose(1, 2, 0)) ** 2)
            assert 10 * np.log10(255 ** 2 / max(err, 1e-9)) >= 48


def test_other_states_are_drawn_as_the_training_renderers_other():
    """An occluded region shows the renderer's empty panel in a look of its own (not a flat
    colour, which no training crop shows), over a margin in its mean colour."""
    painter = _RegionPainter(GAMES["sot"][1], np.random.default_rng(0), 5, (320, 180))
    over, empty = painter.other(0, "occluded"), painter.other(0, "empty")
    x, y, w, h = painter.box
    assert over.shape == empty.shape == (h, w, 3) and not np.array_equal(over, empty)
    assert over.reshape(-1, 3).std(0).max() > 1.0
    frame = np.zeros((180, 320, 3), np.uint8)
    assert _paint(frame, 2, painter, None, [(0, 5, "occluded")]) == OTHER
    assert np.array_equal(frame[y:y + h, x:x + w], over) and frame[y - 1, x].any()
    for state in ("placeholder", "words", "empty"):
        frame = np.zeros((180, 320, 3), np.uint8)
        assert _paint(frame, 2, painter, None, [(0, 5, state)]) == OTHER
        assert np.array_equal(frame[y:y + h, x:x + w], painter.other(2, state)) and not frame[y - 1, x].any()


@pytest.mark.slow
def test_a_60_second_720p_match_scrapes_every_frame_and_region(tmp_path):
    """The full-size run: 1,800 frames of 1280x720, three regions, random-weight f=4 models."""
    d = tmp_path / "lol"
    write_screens(d, "lol", seconds=60, fps=30, seed=0)
    torch.manual_seed(0)
    cks = {}
    for r in GAMES["lol"]:
        task = game_task(r.task)
        cks[r.task] = str(save_checkpoint(tmp_path / r.task, create_model(r.task, fold=4), list(task.classes)))
    rows = [i for i in scrape([str(d / "video.mp4")], load_layout(d / "layout.json", cks)) if not isinstance(i, Event)]
    assert [(r["frame"], r["region"]) for r in rows] == [(f, n) for f, n, _ in _truth(d)]
