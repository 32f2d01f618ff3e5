"""`tune` (foldcnn.bench.tune): candidates, budget, ranking on injected timings, accuracy notes,
hints, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foldcnn.bench import WallTimer
from foldcnn.bench.tune import (
    _candidates,
    _fit_budget,
    architecture,
    predict_hint,
    tune,
)
from foldcnn.models import create_model
from foldcnn.checkpoints import save_checkpoint

MODEL = "apex-squad-count"
ANY = {"cpu": None, "cuda": None}  # injected engines: every backend/precision "available"


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def fake_engines(speed):
    """A backend factory whose run() advances a fake clock so that images/s == speed(config)."""
    clock = Clock()

    class Fake:
        def __init__(self, model, config):
            self.config, self.k = config, model.num_classes

        def run(self, x):
            n = x.shape[0]
            clock.t += n * self.config.fold / speed(self.config, n * self.config.fold)
            return np.zeros((n, self.config.fold * self.k), np.float32)

        def close(self):
            pass

    return (lambda model, config, **kw: Fake(model, config)), WallTimer(clock)


def _speed(c, batch):
    # fastest: f=4 on ort int8 at batch 1024; the paper's widths (channel_multiple=1) are slow
    s = 1000.0 * c.fold + {"eager": 0, "ort": 300}[c.backend] + {"fp32": 0, "int8": 700}[c.precision]
    s += {256: 0, 1024: 50, 4096: 20}[batch]  # batch: images in this call (one engine serves all sizes)
    return s / 3 if c.channel_multiple == 1 else s


def test_identical_widths_are_timed_once():
    configs, widths, archs = _candidates(MODEL, (1, 2, 4), (8, 1, 16), (1024,), [("eager", "fp32")], "cpu", {})
    builds = sorted((c.fold, c.channel_multiple) for c in configs)
    # f=2: 8 and 16 both round 45 -> 48 and 11 -> 16; f=4: 64/16 for every rounding
    assert builds == [(1, None), (2, 1), (2, 8), (4, 8)]
    assert widths[(2, 1)] != widths[(2, 8)] and len(archs) == 4


def test_tune_picks_the_max_of_injected_measurements():
    make, timer = fake_engines(_speed)
    res = tune(MODEL, folds=(1, 2, 4), batch_sizes=(256, 1024, 4096), seconds=1000,
               backends=[("eager", "fp32"), ("ort", "fp32"), ("ort", "int8")], make_backend=make, timer=timer,
               available=ANY)
    speeds = [r["images_per_s"] for r in res.ranking]
    assert speeds == sorted(speeds, reverse=True)
    w = res.winner
    assert (w["fold"], w["channel_multiple"], w["batch_size"], w["backend"], w["precision"]) == (4, 8, 1024, "ort", "int8")
    assert w["images_per_s"] == pytest.approx(4000 + 300 + 700 + 50)
    assert len(res.ranking) == 4 * 3 * 3  # builds x batch sizes x backends
    assert res.skipped == [] and all(r["accuracy"] == "-" for r in res.ranking)


def test_budget_prunes_batch_sizes_and_compile():
    from foldcnn.bench import make_configs

    cfgs = make_configs([MODEL], [1, 4], [256, 1024, 4096], [("eager", "fp32"), ("compile", "fp32")])
    notes: list[str] = []
    kept, min_s = _fit_budget(cfgs, 2, 5.0, notes)
    assert {c.requested_batch_size for c in kept} == {1024}
    assert {c.backend for c in kept} == {"eager"}
    assert len(notes) >= 2 and 0.02 <= min_s <= 1.0
    notes = []
    kept, min_s = _fit_budget(cfgs[:2], 2, 1000.0, notes)
    assert kept == cfgs[:2] and min_s == 1.0 and notes == []


def test_hints_train_or_predict(tmp_path):
    make, timer = fake_engines(_speed)
    res = tune(MODEL, folds=(1, 4), batch_sizes=(1024,), backends=[("ort", "int8")], make_backend=make,
               timer=timer, available=ANY, seconds=100)
    train, predict = predict_hint(res)
    assert train == f"foldcnn train --task {MODEL} --fold 4 --out runs/{MODEL}-f4"
    assert predict.startswith(f"foldcnn predict runs/{MODEL}-f4/checkpoint ")
    assert "--backend ort --precision int8 --batch-size 1024" in predict


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model(MODEL, fold=2)
    cal = torch.randint(0, 256, (24, *model.input_shape), dtype=torch.uint8)
    save_checkpoint(tmp_path / "ck", model, [str(i) for i in range(model.num_classes)],
                    metrics={"test_top1": 0.9}, calibration_images=cal)
    return str(tmp_path / "ck")


def test_tune_with_checkpoint_reports_accuracy_cost(checkpoint):
    from foldcnn.backends import available_backends

    if ("eager", "bf16") not in available_backends("cpu"):
        pytest.skip("no bf16 on this CPU")
    make, timer = fake_engines(lambda c, b: 100.0 * c.fold + (50 if c.precision == "bf16" else 0))
    res = tune(checkpoint=checkpoint, folds=(1, 2), channel_multiples=(8,), batch_sizes=(64,),
               backends=[("eager", "fp32"), ("eager", "bf16")], make_backend=make, timer=timer, available=ANY)
    assert res.model == MODEL and res.checkpoint_build == (2, 8)
    acc = {(r["fold"], r["precision"]): r["accuracy"] for r in res.ranking}
    assert acc[(1, "fp32")] == acc[(1, "bf16")] == "unknown: train it"
    assert acc[(2, "fp32")] == "test top-1 90.0% (checkpoint)"
    assert acc[(2, "bf16")].endswith("agreement with fp32 on 24 calibration images")
    assert 0 <= float(acc[(2, "bf16")].split("%")[0]) <= 100
    # the winner is the checkpoint's own build: run it directly
    assert predict_hint(res) == [(f"foldcnn predict {checkpoint} --input PATH --out preds.csv "
                                  "--backend eager --precision bf16 --batch-size 64")]


def test_tune_rejects_a_model_that_is_not_the_checkpoints(checkpoint):
    with pytest.raises(ValueError, match="holds 'apex-squad-count'"):
        tune("sot-timer", checkpoint=checkpoint)
    with pytest.raises(ValueError, match="name the model"):
        tune()


def test_architecture_tells_builds_apart():
    a = architecture(create_model(MODEL, fold=2, channel_multiple=1))
    assert a != architecture(create_model(MODEL, fold=2, channel_multiple=8))
    assert architecture(create_model(MODEL, fold=4, channel_multiple=1)) == \
        architecture(create_model(MODEL, fold=4, channel_multiple=16))


def test_cli_tune_end_to_end(capsys):
    from foldcnn.cli import main

    rc = main(["tune", MODEL, "--folds", "1,2", "--channel-multiples", "8", "--batch-sizes", "8",
               "--backends", "eager/fp32", "--seconds", "3", "--threads", "1", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ranking of 2 candidates" in out and "winner:" in out
    assert "foldcnn predict" in out
    assert main(["tune"]) == 2


def test_tune_on_cuda_without_a_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="skipped: no CUDA device"):
        tune(MODEL, device="cuda")
