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
from foldcnn.data.screens import GAMES, write_screens
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
