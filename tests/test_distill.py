import json
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from foldcnn import create_model
from foldcnn.checkpoints import save_checkpoint
from foldcnn.train.config import TrainConfig
from foldcnn.train.distill import TeacherError, check_teacher, distill_loss_sum, teacher_logits
from foldcnn.train.loop import evaluate, train_model
from foldcnn.train.run import DataSpec, ModelSpec, RunOptions, run_training
from tiny_data import easy_dataset as shared_easy_dataset


easy_dataset = partial(shared_easy_dataset, size=(12, 12))


def test_losses_match_their_definitions():
    torch.manual_seed(0)
    s, t = torch.randn(7, 5), torch.randn(7, 5)
    assert distill_loss_sum(s, t, "mse") == pytest.approx(F.mse_loss(s, t).item() * 7, rel=1e-5)
    temp = 3.0
    p_t = F.softmax(t / temp, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / temp, 1))).sum() * temp**2
    assert distill_loss_sum(s, t, "kl", temp) == pytest.approx(kl.item(), rel=1e-5)
    assert distill_loss_sum(t, t, "kl", temp).abs() < 1e-5 and distill_loss_sum(t, t, "mse") == 0
    with pytest.raises(ValueError, match="mse, kl"):
        distill_loss_sum(s, t, "l1")


def test_teacher_of_another_task_is_refused():
    data = easy_dataset(10, 0)
    good = create_model("lol-gold-fraction", num_classes=3, input_size=(12, 12))
    check_teacher(good, ["r", "g", "b"], data)
    with pytest.raises(TeacherError, match="folded"):
        check_teacher(create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(12, 12)),
                      ["r", "g", "b"], data)
    with pytest.raises(TeacherError, match="4 classes but the data has 3"):
        check_teacher(create_model("lol-gold-fraction", num_classes=4, input_size=(12, 12)), list("rgbx"), data)
    with pytest.raises(TeacherError, match="label 2: teacher 'x', data 'b'"):
        check_teacher(good, ["r", "g", "x"], data)
    with pytest.raises(TeacherError, match=r"\(3, 14, 12\)"):
        check_teacher(create_model("lol-gold-fraction", num_classes=3, input_size=(14, 12)), list("rgb"), data)


@pytest.mark.parametrize("kind,scale", [("mse", 2.0), ("kl", 6.0)])
def test_pure_distillation_follows_the_teacher_per_image(kind, scale):
    # A perfect teacher (logits = scale * one-hot label) and no cross-entropy at all: the folded
    # student can only learn the labels if teacher row i really belongs to image i.
    train, val = easy_dataset(160, 0), easy_dataset(48, 1)
    t = F.one_hot(train.labels, 3).float() * scale
    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(12, 12))
    cfg = TrainConfig(epochs=4, batch_size=16, distill=kind, distill_weight=1.0, temperature=2.0,
                      train_batchnorm=False)  # the routing check, without BN's extra fitting power
    result = train_model(model, train, val, cfg, progress=False, teacher_logits=t)
    assert result.best_val_top1 > 0.7  # chance is 1/3
    # With the teacher's rows shuffled, the same run learns nothing useful.
    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(12, 12))
    shuffled = t[torch.randperm(len(t), generator=torch.Generator().manual_seed(1))]
    bad = train_model(model, train, val, cfg, progress=False, teacher_logits=shuffled)
    assert bad.best_val_top1 < 0.5


def test_teacher_logits_must_fit_the_data():
    train, val = easy_dataset(20, 0), easy_dataset(8, 1)
    model = create_model("lol-gold-fraction", num_classes=3, input_size=(12, 12))
    with pytest.raises(ValueError, match="needs teacher_logits"):
        train_model(model, train, val, TrainConfig(epochs=1, distill="mse"), progress=False)
    with pytest.raises(ValueError, match=r"\(20, 3\)"):
        train_model(model, train, val, TrainConfig(epochs=1, distill="mse"), progress=False,
                    teacher_logits=torch.zeros(19, 3))
    with pytest.raises(ValueError, match="distill is 'none'"):
        train_model(model, train, val, TrainConfig(epochs=1), progress=False, teacher_logits=torch.zeros(20, 3))


def _teacher_for(task: str, tmp_path, fold: int = 1):
    from foldcnn.data.game_tasks import game_task_classes

    torch.manual_seed(0)
    model = create_model(task, fold=fold)
    return save_checkpoint(tmp_path / f"teacher-{task}-{fold}", model, game_task_classes(task))


def test_run_computes_teacher_logits_once_and_caches_them(tmp_path, monkeypatch):
    import foldcnn.train.run as run_mod

    teacher = _teacher_for("sot-coin-count", tmp_path)
    calls = []
    real = run_mod.teacher_logits
    monkeypatch.setattr(run_mod, "teacher_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = DataSpec(task="sot-coin-count", train_size=48, val_size=16, test_size=16)
    cfg = TrainConfig(epochs=2, batch_size=16, distill="kl", distill_weight=0.5)
    out = tmp_path / "run"
    m = run_training(ModelSpec("sot-coin-count", fold=2), data, cfg, RunOptions(out, quiet=True, teacher=teacher))
    assert len(calls) == 1  # once per data set, not per epoch
    d = m["features"]["distillation"]
    assert d["kind"] == "kl" and d["teacher_fold"] == 1 and not d["cached"] and len(d["teacher_sha256"]) == 64
    # A new run in the same folder (overwrite=True: never silently) reuses the cached logits.
    m = run_training(ModelSpec("sot-coin-count", fold=2), data, cfg,
                     RunOptions(out, quiet=True, teacher=teacher, overwrite=True))
    assert len(calls) == 1 and m["features"]["distillation"]["cached"]
    json.loads((out / "run.json").read_text())


def test_run_refuses_bad_teachers_before_training(tmp_path):
    data = DataSpec(task="sot-coin-count", train_size=16, val_size=8, test_size=8)
    cfg = TrainConfig(epochs=1, distill="mse")
    with pytest.raises(TeacherError, match="fold=2"):  # before any data is generated
        run_training(ModelSpec("sot-coin-count", fold=2), data, cfg,
                     RunOptions(tmp_path / "a", teacher=_teacher_for("sot-coin-count", tmp_path, fold=2)))
    with pytest.raises(TeacherError, match="another task"):
        run_training(ModelSpec("sot-coin-count", fold=2), data, cfg,
                     RunOptions(tmp_path / "b", teacher=_teacher_for("lol-gold-fraction", tmp_path)))
    with pytest.raises(ValueError, match="needs a teacher"):
        run_training(ModelSpec("sot-coin-count", fold=2), data, cfg, RunOptions(tmp_path / "c"))
    assert not (tmp_path / "b" / "metrics.jsonl").exists()


def test_teacher_logits_are_in_image_order():
    torch.manual_seed(0)
    teacher = create_model("lol-gold-fraction", num_classes=3, input_size=(12, 12)).eval()
    images = easy_dataset(9, 0).images
    got = teacher_logits(teacher, images, batch_size=4)
    with torch.no_grad():
        want = teacher.classify(images.float() / 255)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_cli_distill_flags(tmp_path, capsys):
    from foldcnn.cli import main

    assert main(["train", "--task", "sot-coin-count", "--distill", "kl", "--out", str(tmp_path / "x")]) == 2
    assert "--distill needs --teacher" in capsys.readouterr().err
    teacher = _teacher_for("lol-gold-fraction", tmp_path)
    assert main(["train", "--task", "sot-coin-count", "--teacher", str(teacher), "--fold", "2",
                 "--train-size", "16", "--val-size", "8", "--test-size", "8", "--out", str(tmp_path / "y")]) == 2
    assert "another task" in capsys.readouterr().err


def test_cli_teacher_distills_with_kl_by_default_as_fold_does(tmp_path):
    import json

    from foldcnn.cli import main

    teacher = _teacher_for("sot-coin-count", tmp_path)
    out = tmp_path / "run"
    args = ["train", "--task", "sot-coin-count", "--teacher", str(teacher), "--fold", "2", "--epochs", "1",
            "--train-size", "16", "--val-size", "8", "--test-size", "8", "--regroupings", "1", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["features"]["distillation"]["kind"] == "kl"
    assert main([*args, "--distill", "mse", "--out", str(tmp_path / "mse")]) == 0
    assert json.loads((tmp_path / "mse" / "run.json").read_text())["features"]["distillation"]["kind"] == "mse"


def test_bf16_channels_last_distillation_runs():
    train, val = easy_dataset(64, 0), easy_dataset(16, 1)
    model = create_model("lol-gold-fraction", fold=4, num_classes=3, input_size=(12, 12))
    cfg = TrainConfig(epochs=1, batch_size=32, precision="bf16", channels_last=True, distill="mse")
    result = train_model(model, train, val, cfg, progress=False, teacher_logits=torch.randn(64, 3))
    assert result.features["precision"] == "bf16" and torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    assert evaluate(model, val)["images"] == 16
