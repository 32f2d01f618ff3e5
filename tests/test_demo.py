"""`foldcnn demo`: the pipeline end to end on a tiny budget (correctness, not speed)."""

import importlib.util
import json

import pytest

from foldcnn.cli import main
from foldcnn.workflows.demo import DemoConfig, comparison_rows, run_demo

TINY = dict(task="sot-coin-count", fold=2, train_size=120, val_size=40, test_size=60, epochs_original=1,
            epochs_folded=1, trials=1, min_seconds=0.01, batch_size=32, backends=(("eager", "fp32"),))


def test_demo_trains_both_measures_both_and_writes_report(tmp_path):
    cfg = DemoConfig(**TINY)
    stages = []
    result = run_demo(tmp_path / "demo", cfg, progress=False, on_stage=stages.append)
    assert len(stages) == 4
    assert set(result.accuracy) == {1, 2}
    for acc in result.accuracy.values():
        assert 0.0 <= acc["test_top1"] <= 1.0 and acc["command"].startswith("foldcnn train --task sot-coin-count")
    rows = comparison_rows(cfg, result)
    assert len(rows) == 1 and rows[0]["original_images_per_s"] > 0 and rows[0]["folded_images_per_s"] > 0
    assert rows[0]["ratio"] == pytest.approx(rows[0]["folded_images_per_s"] / rows[0]["original_images_per_s"])
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "original (f=1)" in report and "folded (f=2)" in report and "foldcnn bench" in report
    assert "class changes with their fold-mates" in report  # the folded run's flip rate is shown
    assert "end to end, `foldcnn predict` on the test PNGs" in report
    if importlib.util.find_spec("matplotlib"):
        assert sorted(p.name for p in (tmp_path / "demo" / "plots").iterdir()) == ["images_per_s.png",
                                                                                  "validation_top1.png"]
    assert {f: r["images"] for f, r in result.end_to_end.items()} == {1: 60, 2: 60}
    assert (tmp_path / "demo" / "folded-f2" / "test-predictions.csv").read_text().count("\n") == 61
    assert (tmp_path / "demo" / "original" / "checkpoint" / "model.safetensors").exists()
    assert (tmp_path / "demo" / "folded-f2" / "checkpoint" / "model.safetensors").exists()
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["config"]["fold"] == 2 and len(saved["throughput"]) == 2
    # the folded CNN distilled from the original it was compared with
    run = json.loads((tmp_path / "demo" / "folded-f2" / "run.json").read_text())
    assert run["features"]["distillation"]["kind"] == "kl"
    assert run["features"]["distillation"]["teacher"] == str(tmp_path / "demo" / "original" / "checkpoint")
    assert "--teacher" in result.accuracy[2]["command"] and "--teacher" not in result.accuracy[1]["command"]
    # the folded CNN's own weight decay, recorded and in its reproduce command; the original's default
    original = json.loads((tmp_path / "demo" / "original" / "run.json").read_text())
    assert run["train_config"]["weight_decay"] == cfg.weight_decay_folded == 0.05
    assert original["train_config"]["weight_decay"] == 1e-5
    assert "--weight-decay 0.05" in result.accuracy[2]["command"] and "--weight-decay" not in result.accuracy[1]["command"]


def test_demo_config_rejects_fold_one_and_unknown_distillation():
    with pytest.raises(ValueError, match="fold must be >= 2"):
        DemoConfig(fold=1)
    with pytest.raises(ValueError, match="distill must be"):
        DemoConfig(distill="soft")


def test_demo_cli_unknown_task_is_one_line(capsys, tmp_path):
    assert main(["demo", "--task", "nope", "--out", str(tmp_path / "d"), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err
