"""foldcnn.scrape.events: a value counts once it holds --hold readings and ends only when another
reading holds as long; 'other' ends an event."""

import csv
import json

import pytest

from foldcnn.cli import main
from foldcnn.scrape import Event, EventTracker, scrape
from test_scrape import setup  # noqa: F401 - the module fixture: a tiny video, checkpoints, layout
from tiny_data import one_thread  # noqa: F401


def _events(readings, hold=3, fps=10.0):
    t = EventTracker("v.mp4", "gold", hold)
    out = [t.add(f, f / fps, v, c) for f, (v, c) in enumerate(readings)]
    out.append(t.close())
    return [e for e in out if e is not None]


def test_a_value_counts_once_it_holds_k_readings():
    r = [("5", 0.9)] * 2 + [("6", 0.8)] * 3 + [("7", 0.7)] * 4
    events = _events(r)
    assert [(e.value, e.start_frame, e.end_frame) for e in events] == [("6", 2, 4), ("7", 5, 8)]
    assert events[0].start_s == pytest.approx(0.2) and events[1].end_s == pytest.approx(0.8)
    assert [(e.value, e.start_frame) for e in _events(r, hold=2)] == [("5", 0), ("6", 2), ("7", 5)]
    assert len(_events(r, hold=5)) == 0


def test_other_ends_an_event_and_starts_none():
    r = [("5", 0.9)] * 3 + [("other", 0.99)] * 4 + [("5", 0.6)] * 3
    events = _events(r)
    assert [(e.value, e.start_frame, e.end_frame) for e in events] == [("5", 0, 2), ("5", 7, 9)]


def test_a_flicker_breaks_the_run_and_min_confidence_is_the_runs():
    r = [("5", 0.9), ("5", 0.4), ("3", 0.9), ("5", 0.9), ("5", 0.8), ("5", 0.95)]
    events = _events(r)
    assert [(e.value, e.start_frame, e.end_frame, e.min_confidence) for e in events] == [("5", 3, 5, 0.8)]


def test_a_misread_shorter_than_hold_does_not_split_an_event():
    r = [("5", 0.9)] * 4 + [("8", 0.7), ("other", 0.6)] + [("5", 0.5)] * 3 + [("3", 0.9)] * 2 + [("5", 0.8)]
    events = _events(r)
    # the event goes on through the misreads; min_confidence is over the readings of its value
    assert [(e.value, e.start_frame, e.end_frame, e.min_confidence) for e in events] == [("5", 0, 11, 0.5)]


def test_an_event_ends_at_its_last_reading_when_another_holds():
    r = [("5", 0.9)] * 3 + [("6", 0.9)] + [("5", 0.9)] + [("6", 0.8)] * 3 + [("other", 0.9)] * 2 + [("6", 0.7)]
    events = _events(r)
    assert [(e.value, e.start_frame, e.end_frame) for e in events] == [("5", 0, 4), ("6", 5, 10)]
    # hold 1: every change ends the event (the truth's events)
    assert [(e.value, e.start_frame, e.end_frame) for e in _events(r, hold=1)] == [
        ("5", 0, 2), ("6", 3, 3), ("5", 4, 4), ("6", 5, 7), ("6", 10, 10)]


def test_other_that_holds_ends_an_event_and_a_new_value_needs_hold():
    r = [("5", 0.9)] * 3 + [("other", 0.9)] * 3 + [("7", 0.9)] * 2 + [("other", 0.9)] + [("7", 0.9)] * 2
    assert [(e.value, e.start_frame, e.end_frame) for e in _events(r)] == [("5", 0, 2)]


def test_hold_must_be_positive():
    with pytest.raises(ValueError):
        EventTracker("v", "r", 0)


def test_scrape_events_follow_the_rows(setup, tmp_path):  # noqa: F811 - the imported fixture
    """The events the pipeline yields are those of its own rows, per region, with --hold."""
    root, video, _, _ = setup
    items = list(scrape([str(video)], str(root / "layout.json"), hold=2))
    rows = [i for i in items if not isinstance(i, Event)]
    got = sorted((e.region, e.start_frame, e.value) for e in items if isinstance(e, Event))
    want = []
    for region in ("gold", "gold2", "timer"):
        mine = [r for r in rows if r["region"] == region]
        want += [(e.region, e.start_frame, e.value) for e in _region_events(mine, region)]
    assert got == sorted(want)


def _region_events(rows, region):
    t = EventTracker(rows[0]["source"], region, 2)
    out = [t.add(r["frame"], r["time_s"], r["class_name"], r["confidence"]) for r in rows] + [t.close()]
    return [e for e in out if e is not None]


def test_cli_events_csv(setup, tmp_path):  # noqa: F811 - the imported fixture
    root, video, _, _ = setup
    ev = tmp_path / "events.csv"
    assert main(["scrape", str(video), "--layout", str(root / "layout.json"), "--out", str(tmp_path / "r.jsonl"),
                 "--events", str(ev), "--hold", "1", "--json", str(tmp_path / "s.json")]) == 0
    with open(ev) as f:
        events = list(csv.DictReader(f))
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert list(events[0]) == ["source", "region", "value", "start_frame", "end_frame", "start_s", "end_s",
                               "min_confidence"]
    # --hold 1: every run of a non-other class is an event; together they cover those rows
    covered = sum(int(e["end_frame"]) - int(e["start_frame"]) + 1 for e in events)
    assert covered == sum(r["class_name"] != "other" for r in rows)
    assert json.loads((tmp_path / "s.json").read_text())["events"] == len(events)
