import json
import subprocess
import sys
import textwrap

import pytest
import torch

from foldcnn import create_model
from foldcnn.data.base import ArrayDataset
from foldcnn.train.config import TrainConfig
from foldcnn.train.loop import train_model
from foldcnn.train.resume import TRAIN_STATE_FILE, ResumeError, load_train_state


class Stop(Exception):
    pass


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def data(n: int, seed: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 60, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
    images[torch.arange(n), labels % 3] += 120
    images[labels == 3, :, :6] = 250
    return ArrayDataset(images, labels, ["a", "b", "c", "d"])


def fresh_model():
    torch.manual_seed(0)
    return create_model("lol-gold-fraction", fold=2, num_classes=4, input_size=(12, 12))


FEATURES = {
    "plain": {},
    "curriculum+distill": {"curriculum": True, "curriculum_end": 0.5, "distill": "kl", "distill_weight": 0.3},
    "ema": {"ema_decay": 0.9},
    "consistency": {"consistency": 0.5},
    "cross-slot-decay": {"cross_slot_decay": 20.0},
}


def run(tmp, cfg, teacher, **kw):
    model = fresh_model()
    result = train_model(model, data(90, 0), data(30, 1), cfg, out_dir=tmp, progress=False,
                         teacher_logits=teacher, state_every_steps=2, **kw)
    return model, result


def strip(history):
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in history]


@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("where", ["mid-epoch", "epoch-end"])
def test_resume_reaches_the_uninterrupted_result(tmp_path, features, where):
    cfg = TrainConfig(epochs=3, batch_size=16, precision="fp32", threads=1, **FEATURES[features])
    teacher = torch.randn(90, 4, generator=torch.Generator().manual_seed(5)) if cfg.distill != "none" else None
    ref_model, ref = run(tmp_path / "ref", cfg, teacher)

    def kill_mid(info):  # after the state written at step 2 of epoch 2, one step is lost
        if info["epoch"] == 2 and info["step"] == 3:
            raise Stop

    def kill_end(row):
        if row["epoch"] == 1:
            raise Stop

    hook = {"on_step": kill_mid} if where == "mid-epoch" else {"on_epoch": kill_end}
    with pytest.raises(Stop):
        run(tmp_path / "cut", cfg, teacher, **hook)
    state = load_train_state(tmp_path / "cut" / TRAIN_STATE_FILE)
    assert (state["epoch"], state["step"]) == ((1, 2) if where == "mid-epoch" else (1, 0))
    model, result = run(tmp_path / "cut", cfg, teacher, resume=True)
    assert result.features["resumed_from"] == {"epoch": state["epoch"], "step": state["step"]}
    assert strip(result.history) == strip(ref.history)
    assert result.best_epoch == ref.best_epoch and result.best_val_top1 == ref.best_val_top1
    for k, v in ref_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    rows = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("schedule,optimizer", [("onecycle", "adamw"), ("cosine", "sgd"), ("constant", "rmsprop")])
def test_state_loads_with_weights_only(tmp_path, schedule, optimizer):
    cfg = TrainConfig(epochs=1, batch_size=32, schedule=schedule, optimizer=optimizer, precision="fp32")
    run(tmp_path, cfg, None)
    state = torch.load(tmp_path / TRAIN_STATE_FILE, weights_only=True)
    assert state["epoch"] == 1 and state["best"]["epoch"] == 1
    model, result = run(tmp_path, cfg, None, resume=True)  # a finished run: nothing left to train
    assert result.best_epoch == 1 and len(result.history) == 1


def test_resume_of_another_run_is_refused(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=32, precision="fp32")
    run(tmp_path, cfg, None)
    with pytest.raises(ResumeError, match=r"different config \(epochs: 1 -> 2, lr: 0.003 -> 0.01\)"):
        run(tmp_path, TrainConfig(epochs=2, batch_size=32, precision="fp32", lr=0.01), None, resume=True)
    other = data(91, 0)
    with pytest.raises(ResumeError, match="training data"):
        train_model(fresh_model(), other, data(30, 1), cfg, out_dir=tmp_path, progress=False, resume=True)
    with pytest.raises(ResumeError, match=r"different config \(ema_decay: 0.0 -> 0.99\)"):
        run(tmp_path, TrainConfig(epochs=1, batch_size=32, precision="fp32", ema_decay=0.99), None, resume=True)
    # Threads and evaluation batch size do not change the result: a resume may change them.
    run(tmp_path, TrainConfig(epochs=1, batch_size=32, precision="fp32", threads=1, eval_batch_size=7), None,
        resume=True)


def test_state_from_before_a_new_config_field_resumes(tmp_path):
    """A state written before a TrainConfig field existed counts that field as its default."""
    cfg = TrainConfig(epochs=1, batch_size=32, precision="fp32")
    run(tmp_path, cfg, None)
    path = tmp_path / TRAIN_STATE_FILE
    state = torch.load(path, weights_only=True)
    config = json.loads(state["fingerprint"]["config"])
    del config["ema_decay"]
    state["fingerprint"]["config"] = json.dumps(config, sort_keys=True)
    del state["ema"]
    torch.save(state, path)
    model, result = run(tmp_path, cfg, None, resume=True)
    assert result.best_epoch == 1
    with pytest.raises(ResumeError, match=r"ema_decay: 0.0 -> 0.5"):
        run(tmp_path, TrainConfig(epochs=1, batch_size=32, precision="fp32", ema_decay=0.5), None, resume=True)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_damaged_or_missing_state_is_a_clear_error(tmp_path):
    with pytest.raises(ResumeError, match="no training state to resume"):
        run(tmp_path / "none", TrainConfig(epochs=1), None, resume=True)
    cfg = TrainConfig(epochs=1, batch_size=32, precision="fp32")
    run(tmp_path, cfg, None)
    path = tmp_path / TRAIN_STATE_FILE
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ResumeError, match="damaged"):
        run(tmp_path, cfg, None, resume=True)
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(ResumeError, match="damaged"):
        run(tmp_path, cfg, None, resume=True)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ResumeError, match="not a foldcnn training state"):
        run(tmp_path, cfg, None, resume=True)
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    path.write_bytes(pickle.dumps({"format": Evil()}))
    with pytest.raises(ResumeError, match="damaged"):  # weights_only refuses arbitrary objects
        run(tmp_path, cfg, None, resume=True)


def test_cli_resume(tmp_path, capsys):
    from foldcnn.cli import main

    args = ["train", "--task", "sot-coin-count", "--fold", "2", "--out", str(tmp_path), "--train-size", "48",
            "--val-size", "16", "--test-size", "16", "--epochs", "1", "--quiet"]
    assert main(args + ["--resume"]) == 2
    assert "no training state to resume" in capsys.readouterr().err
    assert main(args) == 0
    assert main(args + ["--resume"]) == 0
    run_json = json.loads((tmp_path / "run.json").read_text())
    assert run_json["features"]["resumed_from"] == {"epoch": 1, "step": 0}
    assert main(args[:-2] + ["2", "--quiet", "--resume"]) == 2
    assert "epochs: 1 -> 2" in capsys.readouterr().err


KILLED_RUN = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from test_resume import TrainConfig, data, fresh_model, train_model
def on_step(info):
    if info["epoch"] == 2 and info["step"] == 4:
        os.kill(os.getpid(), signal.SIGKILL)
cfg = TrainConfig(epochs=3, batch_size=16, precision="fp32", threads=1)
train_model(fresh_model(), data(90, 0), data(30, 1), cfg, out_dir={out!r}, progress=False, on_step=on_step,
            state_every_steps=3)
"""


def test_resume_after_sigkill_mid_epoch(tmp_path):
    import os

    tests = os.path.dirname(__file__)
    script = textwrap.dedent(KILLED_RUN.format(tests=tests, out=str(tmp_path / "cut")))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    cfg = TrainConfig(epochs=3, batch_size=16, precision="fp32", threads=1)
    ref_model = fresh_model()
    ref = train_model(ref_model, data(90, 0), data(30, 1), cfg, progress=False)
    model = fresh_model()
    result = train_model(model, data(90, 0), data(30, 1), cfg, out_dir=tmp_path / "cut", progress=False,
                         resume=True, state_every_steps=3)
    assert result.features["resumed_from"] == {"epoch": 1, "step": 3}
    assert strip(result.history) == strip(ref.history)
    for k, v in ref_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
