"""`foldcnn demo`: the pipeline end to end on a tiny budget (correctness, not speed)."""

import importlib.util
import json
from dataclasses import replace

import pytest

from foldcnn.cli import build_parser, main
from foldcnn.cli.demo import demo_config
from foldcnn.train.config import TrainConfig
from foldcnn.train.sources import DataSpec
from foldcnn.workflows.demo import DemoConfig, comparison_rows, run_demo


def _tiny() -> DemoConfig:
    d = DemoConfig()
    return replace(d, fold=2, data=replace(d.data, train_size=120, val_size=40, test_size=60),
                   original=replace(d.original, epochs=1), folded=replace(d.folded, epochs=1),
                   bench=replace(d.bench, trials=1, min_seconds=0.01, batch_sizes=(32,), backends=(("eager", "fp32"),)))


def test_demo_trains_both_measures_both_and_writes_report(tmp_path):
    cfg = _tiny()
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
    assert run["train_config"]["weight_decay"] == cfg.folded.weight_decay == 0.05
    assert original["train_config"]["weight_decay"] == 1e-5
    assert "--weight-decay 0.05" in result.accuracy[2]["command"] and "--weight-decay" not in result.accuracy[1]["command"]


def test_demo_config_rejects_fold_one_and_unknown_distillation():
    with pytest.raises(ValueError, match="fold must be >= 2"):
        DemoConfig(fold=1)
    with pytest.raises(ValueError, match="distill must be"):
        DemoConfig(folded=TrainConfig(distill="soft"))
    with pytest.raises(ValueError, match="the original has no teacher"):
        DemoConfig(original=TrainConfig(distill="kl"))
    with pytest.raises(ValueError, match="the demo generates a game task"):
        DemoConfig(data=DataSpec(data_dir="images"))
    with pytest.raises(ValueError, match="one batch size"):
        DemoConfig(bench=replace(DemoConfig().bench, batch_sizes=(256, 1024)))
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        DemoConfig(folded=TrainConfig(weight_decay=-1.0))


class _Stop(Exception):
    pass


def test_demo_training_gets_the_configs_of_0_1(monkeypatch, tmp_path):
    """The same DataSpec and TrainConfig values reach run_training as before DemoConfig composed them
    (0.1.0 built TrainConfig(epochs, seed, distill, distill_check=False), weight decay 0.05 when folded),
    so the demo's training is bit-identical."""
    import foldcnn.train.run as run_module

    calls = []

    def fake(model, data, train, run):
        calls.append((model.name, data, train, model.fold, run.teacher))
        if len(calls) == 2:
            raise _Stop
        return {"summary": {}}

    monkeypatch.setattr(run_module, "run_training", fake)
    with pytest.raises(_Stop):
        run_demo(tmp_path, DemoConfig(), progress=False)
    data = DataSpec(task="sot-coin-count", train_size=6000, val_size=1000, test_size=2000, seed=0)
    original = TrainConfig(epochs=30, seed=0, distill="none", distill_check=False)
    folded = replace(TrainConfig(epochs=200, seed=0, distill="kl", distill_check=False), weight_decay=0.05)
    assert calls == [("sot-coin-count", data, original, 1, None),
                     ("sot-coin-count", data, folded, 4, tmp_path / "original" / "checkpoint")]


def test_demo_flags_set_the_composed_configs():
    args = build_parser().parse_args(["demo", "--task", "sot-timer", "--fold", "3", "--train-size", "500",
                                      "--epochs-original", "5", "--epochs-folded", "7", "--distill", "none"])
    cfg = demo_config(args)
    d = DemoConfig()
    assert cfg == replace(d, fold=3, data=replace(d.data, task="sot-timer", train_size=500),
                          original=replace(d.original, epochs=5), folded=replace(d.folded, epochs=7, distill="none"))
    quick = demo_config(build_parser().parse_args(["demo", "--quick", "--epochs-folded", "3"]))
    assert quick == replace(DemoConfig.quick(), folded=replace(DemoConfig.quick().folded, epochs=3))
    assert demo_config(build_parser().parse_args(["demo"])) == d


def test_demo_cli_bad_value_is_one_line(capsys, tmp_path):
    assert main(["demo", "--fold", "1", "--out", str(tmp_path / "d"), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "fold must be >= 2" in err and "Traceback" not in err


def test_demo_cli_unknown_task_is_one_line(capsys, tmp_path):
    assert main(["demo", "--task", "nope", "--out", str(tmp_path / "d"), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err


def test_demo_config_declares_no_field_of_the_configs_it_composes():
    """DemoConfig holds a DataSpec, two TrainConfigs and a bench Preset; it repeats none of their fields."""
    from dataclasses import fields

    from foldcnn.bench.presets import Preset

    own = {f.name for f in fields(DemoConfig)}
    composed = {f.name for cls in (DataSpec, TrainConfig, Preset) for f in fields(cls)}
    assert own == {"data", "fold", "original", "folded", "bench"} and not own & composed
