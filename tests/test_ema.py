import pytest
import torch

from foldcnn import create_model
from foldcnn.train.config import TrainConfig
from foldcnn.train.ema import WeightAverage
from foldcnn.train.loop import evaluate, train_model
from foldcnn.train.symmetry import tie_fold_slots_
from tiny_data import easy_dataset


def small_model(fold=2):
    torch.manual_seed(0)
    return create_model("lol-gold-fraction", fold=fold, num_classes=3, input_size=(16, 16))


def test_average_follows_the_formula_with_warm_up():
    model = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = WeightAverage(model, decay=0.99)
    targets = []
    for t in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        d = min(0.99, (1 + t) / (10 + t))
        targets.append(d)
        assert ema.current_decay() == pytest.approx(d)
        ema.update(model)
    # Closed form: shadow_t = d_t * shadow_{t-1} + (1 - d_t) * (start + t + 1).
    for k, v0 in start.items():
        expect = v0.clone()
        for t, d in enumerate(targets):
            expect = d * expect + (1 - d) * (v0 + t + 1)
        torch.testing.assert_close(ema.shadow[k], expect)
    assert ema.updates == 30
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, decay=1.0)


def test_swapped_in_holds_the_average_and_restores_the_weights():
    model = small_model()
    tie_fold_slots_(model, 2)  # the tied blocks are what gets averaged
    ema = WeightAverage(model, decay=0.5)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    ema.update(model)
    moved = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.swapped_in(model):
        inside = {k: v.clone() for k, v in model.state_dict().items()}
    for k, avg in ema.shadow.items():  # first update: decay min(0.5, 1/10), so 0.1 * trained + 0.9 * moved
        torch.testing.assert_close(inside[k], 0.1 * trained[k] + 0.9 * moved[k])
        torch.testing.assert_close(inside[k], avg)
    assert any(not torch.equal(inside[k], moved[k]) for k in ema.shadow)
    for k, v in model.state_dict().items():
        assert torch.equal(v, moved[k]), k  # the trained weights come back exactly


def test_load_state_dict_refuses_another_model():
    a = WeightAverage(torch.nn.Linear(3, 2), 0.9)
    b = WeightAverage(torch.nn.Linear(4, 2), 0.9)
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict(a.state_dict())
    c = WeightAverage(torch.nn.Sequential(torch.nn.Linear(3, 2)), 0.9)
    with pytest.raises(ValueError, match="does not match"):
        c.load_state_dict(a.state_dict())


@pytest.mark.parametrize("fold", [1, 4])
def test_training_with_averaging_saves_what_it_validated(fold):
    train, val = easy_dataset(240, 0), easy_dataset(96, 1)
    plain_model, ema_model = small_model(fold), small_model(fold)
    plain = train_model(plain_model, train, val, TrainConfig(epochs=3, batch_size=32, precision="fp32"),
                        progress=False)
    avg = train_model(ema_model, train, val, TrainConfig(epochs=3, batch_size=32, precision="fp32", ema_decay=0.9),
                      progress=False)
    assert avg.features["weight_average"] == {"decay": 0.9, "updates": 3 * 8}  # 8 steps per epoch
    assert plain.features["weight_average"] is None
    # The saved model is the averaged one that was validated, not the last trained weights.
    assert evaluate(ema_model, val)["top1"] == pytest.approx(avg.best_val_top1)
    assert avg.best_val_top1 > 0.6  # chance is 1/3
    differs = [not torch.equal(a, b) for a, b in zip(plain_model.state_dict().values(), ema_model.state_dict().values())]
    assert any(differs)


def test_config_validates_decay():
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=-0.1)
