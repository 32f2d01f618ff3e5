import copy
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from foldcnn import create_model
from foldcnn.train.config import TrainConfig
from foldcnn.train.distill_gate import CHECK_FILE, check_epoch, decide, train_with_check
from foldcnn.train.loop import train_model
from tiny_data import easy_dataset


def test_decide_keeps_distillation_unless_it_tracks_below_the_twin():
    kept = decide([0.5, 0.6, 0.7, 0.8], [0.1, 0.6, 0.7, 0.8], 4)  # the last 3 epochs tie: kept
    assert kept["kept"] and kept["distilled_val_top1"] == kept["undistilled_val_top1"] == 0.7
    off = decide([0.9, 0.6, 0.6, 0.6], [0.1, 0.6, 0.6, 0.7], 4)
    assert not off["kept"] and "switched off" in off["reason"] and off["epoch"] == 4
    assert check_epoch(200) == 50 and check_epoch(3) == 1


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("teacher_kind", ["wrong", "right"])
def test_the_run_goes_on_with_whichever_recipe_won_exactly_as_a_plain_run_of_it(teacher_kind, tmp_path):
    """A teacher that names the wrong class is switched off at the check and the result is the
    undistilled run, bit for bit; a teacher that names the right one is kept and the result is the
    distilled run, bit for bit (both continue through resume)."""
    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(12, 12))
    train, val = easy_dataset(60, 0, size=(12, 12)), easy_dataset(30, 1, size=(12, 12))
    shift = 1 if teacher_kind == "wrong" else 0
    teacher = 8.0 * F.one_hot((train.labels + shift) % 3, 3).float()
    cfg = TrainConfig(epochs=8, batch_size=16, precision="fp32", threads=1, distill="kl", distill_weight=0.9,
                      temperature=1.0)
    start = copy.deepcopy(model)
    result, record = train_with_check(model, train, val, cfg, tmp_path / "run", teacher, progress=False,
                                      state_every_steps=0)
    assert record["kept"] == (teacher_kind == "right") and record["epoch"] == 2
    assert json.loads((tmp_path / "run" / CHECK_FILE).read_text())["kept"] == record["kept"]
    alone = start
    same_cfg = cfg if record["kept"] else TrainConfig(**{**cfg.to_dict(), "distill": "none"})
    twin = train_model(alone, train, val, same_cfg, out_dir=tmp_path / "alone", progress=False,
                       teacher_logits=teacher if record["kept"] else None, state_every_steps=0)
    assert [r["val_top1"] for r in result.history] == [r["val_top1"] for r in twin.history]
    got, want = _weights(model), _weights(alone)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def test_no_check_without_a_teacher_or_when_turned_off(tmp_path):
    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(12, 12))
    train, val = easy_dataset(30, 0, size=(12, 12)), easy_dataset(12, 1, size=(12, 12))
    cfg = TrainConfig(epochs=2, batch_size=16, precision="fp32", threads=1)
    assert train_with_check(model, train, val, cfg, tmp_path / "a", None, progress=False)[1] is None
    off = TrainConfig(**{**cfg.to_dict(), "distill": "kl", "distill_check": False})
    result, record = train_with_check(model, train, val, off, tmp_path / "b", torch.zeros(30, 3), progress=False)
    assert record is None and not (tmp_path / "b" / CHECK_FILE).exists() and len(result.history) == 2


def test_a_run_killed_while_the_twin_trained_resumes_to_the_same_result(tmp_path):
    from foldcnn.train.distill_gate import PROBE_DIR, resume_state
    from foldcnn.train.resume import TRAIN_STATE_FILE

    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(12, 12))
    train, val = easy_dataset(40, 0, size=(12, 12)), easy_dataset(20, 1, size=(12, 12))
    teacher = 8.0 * F.one_hot((train.labels + 1) % 3, 3).float()
    cfg = TrainConfig(epochs=6, batch_size=16, precision="fp32", threads=1, distill="kl")
    whole, cut = copy.deepcopy(model), copy.deepcopy(model)
    ref, ref_record = train_with_check(whole, train, val, cfg, tmp_path / "whole", teacher, progress=False)
    out = tmp_path / "cut"  # killed after the twin's first epoch, before the run's own first state
    train_model(copy.deepcopy(cut), train, val, replace(cfg, distill="none"), out_dir=out / PROBE_DIR,
                until_epoch=1, progress=False)
    assert resume_state(out) == out / PROBE_DIR / TRAIN_STATE_FILE
    result, record = train_with_check(cut, train, val, cfg, out, teacher, resume=True, progress=False)
    assert record == ref_record and resume_state(out) == out / TRAIN_STATE_FILE
    assert [r["val_top1"] for r in result.history] == [r["val_top1"] for r in ref.history]
    assert all(torch.equal(a, b) for a, b in zip(_weights(cut).values(), _weights(whole).values()))


def test_the_check_epoch_is_judged_on_the_curve_the_run_goes_on_with(tmp_path):
    """A search judges a candidate from ``on_epoch`` at its first rung, the check's epoch. That call
    waits for the twin and the decision, then sees the winner's last epoch with ``metrics.jsonl``
    holding the winner's curve: a teacher that drags the start down does not get the candidate
    abandoned where its undistilled twin would go on well. Earlier epochs are seen as they end."""
    from foldcnn.train.distill_gate import PROBE_DIR

    class Stop(Exception):
        pass

    seen = []

    def judge(row):
        seen.append((row["epoch"], (tmp_path / "run" / PROBE_DIR).exists()))
        if row["epoch"] == check_epoch(8):
            seen.append([json.loads(line)["val_top1"] for line in (tmp_path / "run" / "metrics.jsonl").open()])
            raise Stop

    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(12, 12))
    train, val = easy_dataset(40, 0, size=(12, 12)), easy_dataset(20, 1, size=(12, 12))
    wrong = 8.0 * F.one_hot((train.labels + 1) % 3, 3).float()  # a confident teacher, always wrong
    cfg = TrainConfig(epochs=8, batch_size=16, precision="fp32", threads=1, distill="kl", distill_weight=0.9)
    with pytest.raises(Stop):
        train_with_check(model, train, val, cfg, tmp_path / "run", wrong, progress=False, on_epoch=judge)
    check = json.loads((tmp_path / "run" / CHECK_FILE).read_text())
    twin = [json.loads(line)["val_top1"] for line in (tmp_path / "run" / PROBE_DIR / "metrics.jsonl").open()]
    assert not check["kept"]  # the wrong teacher lost to its twin
    assert seen[:-2] == [(1, False)]  # epoch 1 of the distilled run, before any twin existed
    assert seen[-2] == (2, True) and seen[-1] == twin and len(twin) == check_epoch(8)


def _small_runs(tmp_path, min_steps=None):
    """An original and a distilled f=2 model through run_training with the default budget of their fold
    (``min_steps`` replaces the floor); their run.json manifests."""
    from foldcnn.train.run import DataSpec, ModelSpec, RunOptions, run_training

    data = DataSpec(task="sot-coin-count", train_size=120, val_size=60, test_size=60)
    floor = {} if min_steps is None else {"min_steps": min_steps}
    first = run_training(ModelSpec("sot-coin-count"), data, TrainConfig.for_fold(1, threads=1, **floor),
                         RunOptions(tmp_path / "o", quiet=True))
    folded = run_training(ModelSpec("sot-coin-count", fold=2), data,
                          TrainConfig.for_fold(2, threads=1, distill="kl", **floor),
                          RunOptions(tmp_path / "f2", quiet=True, teacher=tmp_path / "o" / "checkpoint"))
    return first, folded


def _check_manifests(first, folded, tmp_path):
    for m in (first, folded):
        b = m["features"]["budget"]
        assert b["extended"] and m["train_config"]["epochs"] == b["epochs"] > b["epochs_asked"]
        assert b["steps"] >= b["min_steps"] and m["summary"]["epochs_run"] <= b["epochs"]
        assert m["summary"]["still_improving"] is not None
    check = folded["features"]["distillation"]["check"]
    assert check["epoch"] == check_epoch(folded["train_config"]["epochs"])
    assert ("final" in check) == check["kept"]  # a raised budget: a kept teacher meets the finished twin
    if check["kept"]:
        best = max(check["final"]["distilled_best_val_top1"], check["final"]["undistilled_best_val_top1"])
        assert folded["summary"]["best_val_top1"] == best
    assert json.loads((tmp_path / "f2" / CHECK_FILE).read_text())["kept"] == check["kept"]


def test_run_json_records_the_budget_and_the_check(tmp_path):
    _check_manifests(*_small_runs(tmp_path, min_steps=300), tmp_path)


@pytest.mark.slow
def test_default_budget_end_to_end_on_a_small_set(tmp_path):
    """The real floor (3,780 steps at f=1, 6,300 at f=2) on 120 generated images, with plateau stopping."""
    _check_manifests(*_small_runs(tmp_path), tmp_path)


def _result(best, vals, epoch=1):
    from foldcnn.train.loop import TrainResult

    return TrainResult(best_epoch=epoch, best_val_top1=best, history=[{"val_top1": v} for v in vals])


def test_final_choice_keeps_the_better_run_on_validation_ties_by_the_smoothed_curve():
    from foldcnn.train.distill_gate import final_choice

    assert final_choice(_result(0.9, [0.5, 0.9]), _result(0.8, [0.8, 0.8]))["kept"]
    lost = final_choice(_result(0.8, [0.8, 0.8]), _result(0.9, [0.5, 0.9]))
    assert not lost["kept"] and "twin's weights were kept" in lost["reason"]
    tie = final_choice(_result(0.9, [0.5, 0.5, 0.9]), _result(0.9, [0.9, 0.9, 0.9]))
    assert not tie["kept"] and "3-epoch means" in tie["reason"]
    assert final_choice(_result(0.9, [0.9]), _result(0.9, [0.9]))["kept"]  # a full tie keeps the teacher


@pytest.mark.parametrize("winner", ["distilled", "undistilled"])
def test_finish_twin_ends_with_the_full_run_the_final_choice_names(winner, monkeypatch, tmp_path):
    """With finish_twin the twin also runs to its end; the model then holds, bit for bit, the weights
    of a plain full run of the recipe the final choice names, and the result is that run's (the
    choice itself is forced here, to reach both outcomes; its rule is tested above)."""
    from foldcnn.train import distill_gate

    real = distill_gate.final_choice
    monkeypatch.setattr(distill_gate, "final_choice", lambda d, u: {**real(d, u), "kept": winner == "distilled"})
    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(12, 12))
    train, val = easy_dataset(60, 0, size=(12, 12)), easy_dataset(30, 1, size=(12, 12))
    teacher = 8.0 * F.one_hot(train.labels, 3).float()
    cfg = TrainConfig(epochs=8, batch_size=16, precision="fp32", threads=1, distill="kl", distill_weight=0.9,
                      temperature=1.0)
    start = copy.deepcopy(model)
    result, record = train_with_check(model, train, val, cfg, tmp_path / "run", teacher, progress=False,
                                      state_every_steps=0, finish_twin=True)
    assert record["kept"] and record["final"]["kept"] == (winner == "distilled")
    assert json.loads((tmp_path / "run" / CHECK_FILE).read_text())["final"] == record["final"]
    runs = {}
    for kind, t in (("distilled", teacher), ("undistilled", None)):
        alone = copy.deepcopy(start)
        runs[kind] = train_model(alone, train, val, cfg if t is not None else replace(cfg, distill="none"),
                                 out_dir=tmp_path / kind, progress=False, teacher_logits=t, state_every_steps=0)
        assert record["final"][f"{kind}_best_val_top1"] == round(runs[kind].best_val_top1, 5)
        if kind == winner:
            got, want = _weights(model), _weights(alone)
            assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert [r["val_top1"] for r in result.history] == [r["val_top1"] for r in runs[winner].history]
