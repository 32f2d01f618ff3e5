"""`foldcnn fold --search`: the search space, the abandonment rule, a tiny search end to end
(statuses, fastest-first training, no checkpoint named that does not exist), resume, and bad input."""

import json
import math
from pathlib import Path

import pytest

from foldcnn.workflows.fold.space import Candidate, abandon_reason, rung_epochs, search_space
from tiny_data import write_folder

TINY = ["--epochs", "4", "--original-epochs", "4", "--backends", "eager/fp32", "--batch-sizes", "8", "--trials", "1",
        "--min-seconds", "0.01", "--threads", "1", "--batch-size", "8"]


def test_search_space_defaults_paper_point_and_no_original():
    space = search_space((1, 2, 4), None, (None,))
    names = [c.name for c in space]
    assert "f1-w1" not in names  # the original is measured, never a candidate
    assert {"f1-w0.5", "f1-w0.71", "f2-w1.41", "f4-w2", "f4-w1"} <= set(names) and len(names) == 2 + 4 + 4
    assert Candidate(4, 2.0).kind == "paper" and Candidate(1, 0.5).kind == "narrower" and Candidate(1, 1.0).kind == "original"
    # the paper's point joins a user's widths; the width rounding means nothing at width 1 (one build)
    space = search_space((4,), (1.0, 0.5), (8, 32))
    assert sorted(c.name for c in space) == ["f4-w0.5-c32", "f4-w0.5-c8", "f4-w1", "f4-w2-c32", "f4-w2-c8"]
    assert any(math.isclose(c.width_mult, 2.0) for c in space)


def test_rungs_and_the_abandonment_rule():
    assert rung_epochs(200) == (50, 100) and rung_epochs(4) == (1, 2) and rung_epochs(1) == ()
    reference = [0.5, 0.7, 0.8, 0.9]  # the original: 40 more points after its first quarter
    assert abandon_reason([0.5], 4, reference, target=0.89, margin_points=2) is None  # 0.5 + 0.45 + 0.02 >= 0.89
    assert abandon_reason([0.5], 4, reference, target=0.99, margin_points=2) is not None  # 0.97 < 0.99
    assert abandon_reason([0.2, 0.3, 0.4], 4, reference, target=0.99, margin_points=2) is None  # not a rung
    assert abandon_reason([0.2, 0.3], 4, [], target=0.99, margin_points=2) is None  # no reference curve: never
    why = abandon_reason([0.5, 0.6], 4, reference, target=0.89, margin_points=0)  # 0.6 + 0.65 * 0.4 = 0.86
    assert "after epoch 2 of 4" in why and "closing 65%" in why and "below the budget 89.00%" in why
    # where the original's later gain is larger than the candidate's own share, it counts
    assert abandon_reason([0.9], 4, [0.5, 0.6, 0.7, 1.0], target=0.995, margin_points=0) is None  # 0.9 + 0.4


def test_a_late_learning_folded_curve_is_not_abandoned():
    """Measured on apex-squad-count (8,000 images): the paper's f=4 point had 93.5% best validation
    top-1 after 50 of its 200 epochs and ended at 98.2%, over a 98.0% budget, while the original
    (60 epochs) gained only 1.5 points after its first quarter. Its half-width sibling, at 54.3%,
    could not get there."""
    original = [0.90] * 14 + [0.97] + [0.985] * 45
    paper = [0.0] * 49 + [0.935]
    assert abandon_reason(paper, 200, original, target=0.98, margin_points=1) is None
    assert abandon_reason([0.0] * 99 + [0.969], 200, original, target=0.98, margin_points=1) is None
    assert abandon_reason([0.0] * 49 + [0.543], 200, original, target=0.98, margin_points=1) is not None


def _screened(row: dict) -> float:
    """The first sweep's images/s, which ordered the training (a confirmed row keeps it beside)."""
    return row.get("screening_images_per_s", row["images_per_s"])


def _search(tmp_path, *extra):
    from foldcnn.cli import main

    data = write_folder(tmp_path / "d", {".": {c: [(12, 12)] * 10 for c in "abc"}})
    out = tmp_path / "out"
    argv = ["fold", "apex-squad-count", "--data", str(data), "--out", str(out), "--search", "--folds", "1,4",
            "--widths", "0.5,1", *TINY, "--quiet", *extra]
    return main(argv), argv, out


def test_tiny_search_end_to_end_then_resume(tmp_path, capsys):
    rc, argv, out = _search(tmp_path)
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    rows = r["candidates"]
    assert rows[0]["kind"] == "original" and {row["name"] for row in rows[1:]} == {"f1-w0.5", "f4-w0.5", "f4-w1", "f4-w2"}
    assert {row["status"] for row in rows} <= {"chosen", "meets", "misses", "abandoned", "untrained"}
    assert sum(row["status"] == "chosen" for row in rows) == 1
    keys = {"fold", "width_mult", "channel_multiple", "flops_per_image", "images_per_s", "engine", "precision",
            "val_top1", "test_top1", "flip_rate", "epochs_trained", "status"}
    assert all(keys <= set(row) for row in rows)
    for row in rows:  # a checkpoint named is a checkpoint that exists; only finished models name one
        assert (row["checkpoint"] is None) == (row["status"] in ("abandoned", "untrained"))
        if row["checkpoint"]:
            assert (Path(row["checkpoint"]) / "config.json").is_file()
    # trained fastest first (in the first sweep's order): nothing faster than the chosen model is
    # untrained; a slower one is trained only when the confirming sweep put it ahead of the chosen one
    chosen = next(row for row in rows if row["status"] == "chosen")
    for row in rows[1:]:
        if _screened(row) > _screened(chosen):
            assert row["status"] in ("misses", "abandoned")
        elif row is not chosen:
            assert row["status"] == "untrained" or row["confirmed"]
    if chosen["kind"] != "original":
        assert chosen["val_top1"] >= r["budget_val_top1"] - 1e-12
    c = r["chosen"]
    assert c["fold"] == chosen["fold"] and c["width_mult"] == chosen["width_mult"] and Path(c["onnx"]).is_file()
    assert c["top1"] == chosen["test_top1"] and c["images_per_s"] == chosen["images_per_s"] and chosen["confirmed"]
    assert rows[0]["confirmed"] and list((out / "search").glob("confirm-*.json"))
    cost = r["cost"]
    assert cost["trained"] + cost["abandoned"] + cost["untrained"] == len(rows) - 1
    md = (out / "report.md").read_text()
    assert r["verdict"][1:] in md and "| candidate |" in md
    from foldcnn.cli import main

    assert main([*argv, "--resume"]) == 0  # nothing retrained: the same rows, the same training cost
    again = json.loads((out / "report.json").read_text())
    assert [(x["name"], x["status"], x["val_top1"]) for x in again["candidates"]] == \
        [(x["name"], x["status"], x["val_top1"]) for x in rows]
    assert again["cost"]["train_seconds"] == cost["train_seconds"]


def test_resume_reuses_timing_and_stages(tmp_path, capsys):
    from foldcnn.cli import main

    rc, argv, out = _search(tmp_path)
    assert rc == 0
    argv = [a for a in argv if a != "--quiet"]
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    rows = json.loads((out / "report.json").read_text())["candidates"]
    trained = [row for row in rows[1:] if row["status"] != "untrained"]
    assert "timing: done earlier" in err and "original: done earlier" in err
    reused = [line for line in err.splitlines() if "done earlier" in line or "abandoned earlier" in line]
    assert len([line for line in reused if "confirming" not in line and "-w" in line]) == len(trained)  # each stage
    assert " training fold=" not in err and "confirming the throughput" not in err  # nothing trained or timed again


@pytest.mark.parametrize("extra, says", [
    (["--widths", "0"], "--widths takes positive numbers"),
    (["--widths", "0.001"], "0 channels wide"),
    (["--folds", "0,4"], "folds must be ints >= 1"),
    (["--invariant", "--cross-slot-decay", "1"], "contradicts it"),
    (["--max-flip-rate", "2"], "--max-flip-rate is a share"),
    (["--train-only"], "--train-only does not apply to --search"),
    (["--precision", "fp64"], "--precision must be among"),
])
def test_bad_search_input_is_one_sentence_and_nothing_trained(tmp_path, capsys, extra, says):
    rc, argv, out = _search(tmp_path, *extra)
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
    assert not list(out.rglob("config.json")) and not (out / "report.json").exists()


def test_search_flags_need_search(tmp_path, capsys):
    from foldcnn.cli import main

    data = write_folder(tmp_path / "d", {".": {c: [(12, 12)] * 4 for c in "ab"}})
    assert main(["fold", "apex-squad-count", "--data", str(data), "--out", str(tmp_path / "o"), "--widths", "0.5",
                 "--quiet"]) == 2
    assert "add search=True (--search)" in capsys.readouterr().err


CONCAT_CNN = '''
import torch
from torch import nn


class Concat(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        y = torch.relu(self.c(torch.cat([self.a(x), self.b(x)], dim=1)))
        return self.head(y.mean((2, 3)))
'''


def test_invariant_refuses_a_model_whose_slots_could_mix(tmp_path, monkeypatch, capsys):
    from foldcnn.cli import main
    from tiny_data import write_user_module

    name = write_user_module(tmp_path, monkeypatch, CONCAT_CNN, "concat_cnn")
    data = write_folder(tmp_path / "d", {".": {c: [(12, 12)] * 6 for c in "abc"}})
    out = tmp_path / "out"
    assert main(["fold", f"{name}:Concat", "--data", str(data), "--out", str(out), "--search", "--folds", "4",
                 "--invariant", "--model-kwargs", '{"input_shape": [3, 12, 12]}', *TINY, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--invariant needs every layer tied" in err and "'c'" in err and len(err.splitlines()) == 1
    assert not list(out.rglob("config.json"))


def test_ray_engine_bad_input_is_one_sentence_before_training(tmp_path, capsys):
    rc, _, out = _search(tmp_path, "--engine", "ray", "--address", "127.0.0.1:9")
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach the Ray cluster at '127.0.0.1:9'" in err and len(err.splitlines()) == 1
    assert not list(out.rglob("config.json"))
    from foldcnn.cli import main

    data = write_folder(tmp_path / "d2", {".": {c: [(12, 12)] * 4 for c in "ab"}})
    assert main(["fold", "apex-squad-count", "--data", str(data), "--out", str(tmp_path / "o"), "--engine", "ray",
                 "--quiet"]) == 2
    assert "add search=True (--search)" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_engine_trains_candidates_as_tune_trials(tmp_path):
    """A local Ray cluster (about a minute to start and stop on 2 cores): the same report as without Ray."""
    rc, argv, out = _search(tmp_path, "--engine", "ray")
    assert rc == 0
    rows = json.loads((out / "report.json").read_text())["candidates"]
    o = _screened(rows[0])
    for row in rows[1:]:  # every candidate faster than the original was a trial: finished or stopped by ASHA
        assert row["status"] in (("chosen", "meets", "misses", "abandoned") if _screened(row) > o else
                                 ("untrained",))
        if row["status"] == "abandoned":
            assert "ASHA" in row["reason"] and not (out / row["name"] / "checkpoint" / "config.json").exists()
    assert (out / "search" / "ray" / "candidates").is_dir()


def test_a_chosen_model_slower_than_the_original_at_agreeing_precisions_gives_way(monkeypatch):
    """After the precision check, gains are taken again; a chosen model that is no faster than the
    original once both run at precisions that answer as fp32 does is not chosen."""
    import foldcnn.workflows.fold.search as search

    settled = {"original": 1000.0, "f4-w1": 900.0}  # f4-w1 was 2000 on int8, which disagreed with fp32

    def fake(row, checkpoint, images, threads, say):
        row["images_per_s"] = settled[row["name"]]

    import foldcnn.workflows.fold.stages as stages

    monkeypatch.setattr(stages, "settle_precision", fake)
    s = search._Search.__new__(search._Search)
    s._splits, s.say, s.opts = type("S", (), {"val": type("V", (), {"images": None})}), (lambda m: None), \
        type("O", (), {"train": type("T", (), {"threads": 1})})
    rows = [{"name": "original", "images_per_s": 1000.0, "gain": 1.0, "checkpoint": "o", "confirmed": True,
             "status": "meets"},
            {"name": "f4-w1", "images_per_s": 2000.0, "gain": 2.0, "checkpoint": "c", "confirmed": True,
             "status": "chosen"},
            {"name": "f4-w0.5", "images_per_s": 3000.0, "gain": 3.0, "checkpoint": None, "status": "abandoned"}]
    chosen = s.settle(rows, rows[1])
    assert chosen is rows[0] and rows[0]["status"] == "chosen" and rows[1]["status"] == "meets"
    assert rows[1]["gain"] == 0.9 and rows[2]["gain"] == 3.0  # unconfirmed rows keep the first sweep's


def test_the_first_sweep_only_orders_so_it_is_lighter():
    from foldcnn.train.sources import DataSpec
    from foldcnn.workflows.fold import FoldOptions
    from foldcnn.workflows.fold.search import screening

    o = FoldOptions("m:N", DataSpec(data_dir="x"), bench_batch_sizes=(256, 1024), bench_trials=3, bench_min_seconds=0.3)
    s = screening(o)
    assert (s.bench_batch_sizes, s.bench_trials, s.bench_min_seconds) == ((1024,), 2, 0.15)
    assert screening(FoldOptions("m:N", DataSpec(data_dir="x"), bench_trials=1)).bench_trials == 1
    assert o.bench_trials == 3  # the user's options, which the confirming sweep reads, are left as given


def test_the_confirming_sweep_times_the_engines_that_can_win():
    from foldcnn.workflows.fold.search import _contenders

    def engines(*names):
        return [{"engine": n, "backend": n.split("/")[0], "precision": n.split("/")[1]} for n in names]

    rows = [{"engines": engines("openvino/int8", "ort/int8", "openvino/bf16", "eager/bf16", "ort/fp32", "eager/fp32")},
            {"engines": engines("openvino/bf16", "openvino/int8", "eager/bf16", "openvino/fp32", "ort/int8")}]
    assert _contenders(rows) == (("openvino", "int8"), ("ort", "int8"), ("openvino", "bf16"), ("ort", "fp32"),
                                 ("eager", "bf16"), ("openvino", "fp32"))
    assert _contenders([*rows, {"engines": None}]) is None  # a first sweep without the list: every engine


def test_rungs_are_fractions_of_the_epochs_a_small_set_raises_the_budget_to(tmp_path, monkeypatch):
    """On a small set run_training raises a candidate's epochs to the floor of steps; its learning
    curve is judged at fractions of those epochs (as the distillation check is), not of the asked ones."""
    from dataclasses import replace

    import foldcnn.workflows.fold.search as search
    from foldcnn.workflows.fold.options import FoldOptions

    asked = FoldOptions.candidate_config
    monkeypatch.setattr(FoldOptions, "candidate_config", lambda self, fold: replace(asked(self, fold), min_steps=40))
    judged = {}

    def spy(curve, epochs, *args):
        judged.setdefault(epochs, len(curve))
        return None

    monkeypatch.setattr(search, "abandon_reason", spy)
    rc, _, out = _search(tmp_path, "--widths", "1", "--folds", "4")
    assert rc == 0
    budget = json.loads((out / "f4-w1" / "run.json").read_text())["features"]["budget"]
    assert budget["extended"] and budget["epochs"] > 4
    assert set(judged) == {budget["epochs"]}
