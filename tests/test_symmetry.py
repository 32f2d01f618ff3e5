"""Fold-slot symmetric training: the tied model is equivariant to shifting fold slots, holds the
unfolded model's weight count, and unties to plain layers computing the same function."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from foldcnn import count_params, create_model, fold_model
from foldcnn.train.batchnorm import add_train_batchnorm_, fuse_train_batchnorm_
from foldcnn.train.symmetry import (
    has_tied_fold_slots,
    slot_split,
    tie_fold_slots_,
    untiable_layers,
    untie_fold_slots_,
)


def _shift_slots(x: torch.Tensor, fold: int, by: int = 1) -> torch.Tensor:
    n, fc = x.shape[:2]
    return x.reshape(n, fold, fc // fold, *x.shape[2:]).roll(by, dims=1).reshape(x.shape)


def _randomize_(model: nn.Module, statistics: bool = True) -> None:
    """Move every parameter away from its init, so no check passes by zeros; with ``statistics``
    also the BatchNorm running statistics (per channel, so not slot-symmetric)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for m in model.modules():
            if statistics and isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def test_slot_split_counts_channels_not_features():
    assert slot_split(64, 4) == (16, 0)
    assert slot_split(56, 3) == (18, 2)
    assert slot_split(16 * 30, 3, unit=30) == (5 * 30, 1 * 30)


@pytest.mark.parametrize("name,fold,cm", [("lol-gold-fraction", 4, None), ("sot-timer", 3, None),
                                          ("apex-squad-count", 2, 1), ("noscope-roundabout", 2, None)])
def test_tied_model_is_equivariant_to_shifting_fold_slots(name, fold, cm):
    torch.manual_seed(0)
    model = create_model(name, fold=fold, channel_multiple=cm)
    add_train_batchnorm_(model)
    tie_fold_slots_(model, fold)
    assert has_tied_fold_slots(model)
    _randomize_(model, statistics=False)  # the tying must hold for any block values, not only at init
    model.eval()
    x = torch.rand(3, *model.folded_input_shape)
    with torch.no_grad():
        out = model(x).reshape(3, fold, -1)
        for by in range(1, fold):
            shifted = model(_shift_slots(x, fold, by)).reshape(3, fold, -1)
            torch.testing.assert_close(shifted, out.roll(by, dims=1), rtol=1e-4, atol=1e-5)
    # and it is not trivially constant: different slots give different outputs
    assert (out[:, 0] - out[:, 1]).abs().max() > 1e-3


def test_tied_model_holds_about_the_unfolded_models_weights():
    original = count_params(create_model("lol-gold-fraction", fold=1))
    folded = create_model("lol-gold-fraction", fold=4)
    dense = count_params(folded)
    tie_fold_slots_(folded, 4)
    tied = count_params(folded)
    # widths 64/16 split evenly into 4 slots: every layer has w^2/4 weights, the original's w'^2
    assert tied < dense / 3
    assert abs(tied - original) / original < 0.15


@pytest.mark.parametrize("fold", [2, 3, 4])
def test_untie_keeps_the_function_and_the_plain_architecture(fold):
    torch.manual_seed(1)
    model = create_model("sot-coin-count", fold=fold)
    params, keys = count_params(model), set(model.state_dict())
    add_train_batchnorm_(model)
    tie_fold_slots_(model, fold)
    _randomize_(model)
    model.eval()
    x = torch.rand(4, *model.folded_input_shape)
    with torch.no_grad():
        before = model(x)
        untie_fold_slots_(model)
        fuse_train_batchnorm_(model)
        after = model(x)
    assert not has_tied_fold_slots(model)
    assert count_params(model) == params and set(model.state_dict()) == keys
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_tying_seeds_blocks_from_the_first_slot_and_keeps_the_init_scale():
    torch.manual_seed(2)
    model = create_model("lol-gold-fraction", fold=4)
    conv = model.features[0]
    first_row = conv.weight[:16].detach().clone()  # output group 0, every input slot
    std = conv.weight.std().item()
    tie_fold_slots_(model, 4)
    torch.testing.assert_close(conv.weight[:16], first_row)
    assert abs(conv.weight.std().item() - std) / std < 0.2


def test_fold_one_is_left_alone_tying_twice_is_refused_and_grouped_convs_train_untied():
    model = create_model("lol-gold-fraction", fold=1)
    tie_fold_slots_(model, 1)
    assert not has_tied_fold_slots(model)
    folded = create_model("lol-gold-fraction", fold=2)
    tie_fold_slots_(folded, 2)
    with pytest.raises(ValueError, match="already tied"):
        tie_fold_slots_(folded, 2)
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.Conv2d(8, 8, 1))
    assert list(untiable_layers(grouped)) == ["0"] and "groups=2" in untiable_layers(grouped)["0"]
    tie_fold_slots_(grouped, 2)
    assert not parametrize.is_parametrized(grouped[0]) and parametrize.is_parametrized(grouped[1])


def test_fx_folded_layers_fed_by_a_concatenation_train_untied():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
            self.mix = nn.Conv2d(16, 8, 1)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            y = torch.relu(torch.cat([self.a(x), self.b(x)], 1))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.mix(y), 1), 1))

    model = fold_model(Cat(), 2, (3, 8, 8))
    assert set(untiable_layers(model)) == {"mix"}
    tie_fold_slots_(model, 2)
    assert not parametrize.is_parametrized(model.mix) and parametrize.is_parametrized(model.a)
    assert model.classify(torch.rand(3, 3, 8, 8)).shape == (3, 3)


def test_tied_training_step_updates_shared_blocks_and_stays_equivariant():
    torch.manual_seed(3)
    model = create_model("sot-coin-count", fold=2)
    add_train_batchnorm_(model)
    tie_fold_slots_(model, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(8, *model.folded_input_shape)
    y = torch.randint(0, model.num_classes, (16,))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = nn.functional.cross_entropy(model(x).reshape(16, -1), y)
    loss.backward()
    opt.step()
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any("original0" in n for n in moved)
    with torch.no_grad():  # train mode: batch statistics, which shift with the slots
        torch.testing.assert_close(model(_shift_slots(x, 2)).reshape(8, 2, -1),
                                   model(x).reshape(8, 2, -1).roll(1, dims=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_train_model_ties_slots_by_default_and_saves_plain_dense_layers(tie, tmp_path):
    from tiny_data import easy_dataset

    from foldcnn.train.config import TrainConfig
    from foldcnn.train.loop import evaluate, train_model

    torch.manual_seed(0)
    model = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(16, 16))
    keys = set(model.state_dict())
    cfg = TrainConfig(epochs=2, batch_size=32, precision="fp32", train_batchnorm=False, tie_slots=tie)
    assert TrainConfig().tie_slots  # the default
    result = train_model(model, easy_dataset(200, 0), easy_dataset(60, 1), cfg, progress=False)
    assert not has_tied_fold_slots(model) and set(model.state_dict()) == keys
    assert evaluate(model, easy_dataset(60, 1))["top1"] == pytest.approx(result.best_val_top1)
    w = model.features[3].weight.detach()  # a hidden conv, 48 channels: 2 slot groups of 24
    circulant = torch.equal(w[:24, :24], w[24:, 24:]) and torch.equal(w[:24, 24:], w[24:, :24])
    assert circulant == tie


def _slot_probe(model: nn.Module, fold: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs (2, f, K) for two inputs that differ only outside fold slot 0."""
    x = torch.rand(2, *model.folded_input_shape)
    y = x.clone()
    c = x.shape[1] // fold
    y[:, c:] = torch.rand_like(y[:, c:])
    with torch.no_grad():
        return model(x).reshape(2, fold, -1), model(y).reshape(2, fold, -1)


@pytest.mark.parametrize("name,fold", [("lol-gold-fraction", 4), ("sot-coin-count", 2)])
def test_slot_diagonal_init_makes_each_slots_logits_see_only_its_own_image(name, fold):
    from foldcnn.train.symmetry import slot_diagonal_init_

    torch.manual_seed(4)
    model = create_model(name, fold=fold).eval()
    for m in model.modules():  # the paper's N(0, 0.01) head would make every difference tiny
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.5)
    out_x, out_y = _slot_probe(model, fold)
    assert (out_x[:, 0] - out_y[:, 0]).abs().max() > 1e-3  # dense init: slot 0 hears its fold-mates
    slot_diagonal_init_(model, fold)
    out_x, out_y = _slot_probe(model, fold)
    torch.testing.assert_close(out_x[:, 0], out_y[:, 0], rtol=1e-5, atol=1e-6)
    assert (out_x[:, 1:] - out_y[:, 1:]).abs().max() > 1e-3  # the changed slots did change


def test_slot_diagonal_init_keeps_each_units_input_variance_and_the_shared_channels():
    from foldcnn.train.symmetry import slot_diagonal_init_

    torch.manual_seed(5)
    conv = nn.Conv2d(3 * 3, 8, 3)  # fold 3: input slots of 3 channels; 8 = 3 groups of 2 + 2 shared
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 6))
    before = conv.weight.detach().clone()
    slot_diagonal_init_(model, 3)
    w = conv.weight.detach()
    scale = (3 * 3 / 3) ** 0.5  # fan-in of a group's row: 3 slots' channels before, one slot's after
    for a in range(3):
        for b in range(3):
            block = w[2 * a:2 * a + 2, 3 * b:3 * b + 3]
            want = before[2 * a:2 * a + 2, 3 * b:3 * b + 3] * scale if a == b else torch.zeros_like(block)
            torch.testing.assert_close(block, want)
    torch.testing.assert_close(w[6:], before[6:])  # the 2 shared output channels keep every weight


def test_slot_diagonal_init_refuses_tied_models_and_leaves_fold_one_alone():
    from foldcnn.train.symmetry import slot_diagonal_init_

    model = create_model("lol-gold-fraction", fold=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    slot_diagonal_init_(model, 1)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    folded = create_model("lol-gold-fraction", fold=2)
    tie_fold_slots_(folded, 2)
    with pytest.raises(ValueError, match="before tie_fold_slots_"):
        slot_diagonal_init_(folded, 2)


# ------------------------------------------------------------------ cross-slot decay
def _slot_logits(model: nn.Module, x: torch.Tensor, fold: int) -> torch.Tensor:
    with torch.no_grad():
        return model(x).reshape(len(x), fold, -1)


def test_shrinking_cross_slot_weights_to_zero_makes_each_slot_depend_on_its_own_image_only():
    from foldcnn.train.symmetry import shrink_cross_slot_

    fold = 4
    torch.manual_seed(2)
    model = create_model("sot-coin-count", fold=fold, channel_multiple=1)  # widths with shared channels too
    add_train_batchnorm_(model)
    tie_fold_slots_(model, fold)
    _randomize_(model)
    model.eval()
    x = torch.rand(2, *model.folded_input_shape)
    other = x.clone()
    c = model.folded_input_shape[0] // fold
    other[:, c:] = torch.rand_like(other[:, c:])  # new fold-mates for slot 0
    before = _slot_logits(model, x, fold)
    assert (before[:, 0] - _slot_logits(model, other, fold)[:, 0]).abs().max() > 1e-4  # they mattered
    reached = shrink_cross_slot_(model, 0.0)
    assert reached == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    torch.testing.assert_close(_slot_logits(model, other, fold)[:, 0], _slot_logits(model, x, fold)[:, 0])
    assert (_slot_logits(model, x, fold)[:, 0] - before[:, 0]).abs().max() > 1e-4  # the model did change
    with pytest.raises(Exception, match="lie in"):
        shrink_cross_slot_(model, 1.5)


def test_shrinking_scales_the_off_diagonal_blocks_and_keeps_the_diagonal():
    from foldcnn.train.symmetry import shrink_cross_slot_

    fold = 2
    torch.manual_seed(3)
    model = create_model("lol-gold-fraction", fold=fold)
    tie_fold_slots_(model, fold)
    _randomize_(model, statistics=False)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 3 * fold)
    w = conv.weight.detach().clone()
    go, gi = conv.out_channels // fold, conv.in_channels // fold
    shrink_cross_slot_(model, 0.25)
    w2 = conv.weight.detach()
    for a in range(fold):
        for b in range(fold):
            block, block2 = (t[a * go:(a + 1) * go, b * gi:(b + 1) * gi] for t in (w, w2))
            torch.testing.assert_close(block2, block if a == b else 0.25 * block)


def test_training_with_infinite_cross_slot_decay_gives_answers_independent_of_fold_mates():
    from tiny_data import easy_dataset

    from foldcnn.train.config import TrainConfig
    from foldcnn.train.loop import train_model

    fold = 2
    torch.manual_seed(0)
    model = create_model("sot-coin-count", fold=fold, num_classes=3, input_size=(16, 16))
    # with a weight average too: its copy of the weights must hold no cross-slot weights either
    cfg = TrainConfig(epochs=2, batch_size=12, threads=1, precision="fp32", cross_slot_decay=float("inf"),
                      ema_decay=0.9)
    result = train_model(model, easy_dataset(36, 0), easy_dataset(12, 1), cfg, progress=False)
    assert not has_tied_fold_slots(model) and result.history
    model.eval()
    x = torch.rand(3, *model.folded_input_shape)
    other = x.clone()
    other[:, 3:] = torch.rand_like(other[:, 3:])
    torch.testing.assert_close(_slot_logits(model, other, fold)[:, 0], _slot_logits(model, x, fold)[:, 0],
                               rtol=1e-4, atol=1e-5)
    # and nor on its slot: the BatchNorm statistics were pooled over the slots before fusing
    assert result.features["slot_statistics_pooled"] > 0
    torch.testing.assert_close(_slot_logits(model, _shift_slots(x, fold), fold).roll(-1, dims=1),
                               _slot_logits(model, x, fold), rtol=1e-4, atol=1e-5)
    # a finite decay shrinks the cross-slot weights but does not remove them
    torch.manual_seed(0)
    finite = create_model("sot-coin-count", fold=fold, num_classes=3, input_size=(16, 16))
    train_model(finite, easy_dataset(36, 0), easy_dataset(12, 1),
                TrainConfig(epochs=2, batch_size=12, threads=1, precision="fp32", cross_slot_decay=5.0), progress=False)
    finite.eval()
    assert (_slot_logits(finite, other, fold)[:, 0] - _slot_logits(finite, x, fold)[:, 0]).abs().max() > 1e-6


def test_cross_slot_decay_is_validated(capsys):
    from foldcnn.cli import main
    from foldcnn.errors import UsageError
    from foldcnn.train.config import TrainConfig

    with pytest.raises(UsageError, match="cross_slot_decay"):
        TrainConfig(cross_slot_decay=-1)
    with pytest.raises(UsageError, match="tie_slots"):
        TrainConfig(cross_slot_decay=1.0, tie_slots=False)
    assert main(["train", "--task", "sot-coin-count", "--fold", "1", "--cross-slot-decay", "inf",
                 "--out", "/tmp/x-never"]) == 2
    assert "--fold 2 or more" in capsys.readouterr().err


def test_pooled_running_statistics_make_the_eval_model_equivariant_again():
    from foldcnn.train.symmetry import pool_slot_statistics_

    fold = 3
    torch.manual_seed(4)
    model = create_model("lol-gold-fraction", fold=fold, channel_multiple=1)  # widths 55: one shared channel
    add_train_batchnorm_(model)
    tie_fold_slots_(model, fold)
    _randomize_(model, statistics=True)  # every channel its own running statistics, as after training
    model.eval()
    x = torch.rand(3, *model.folded_input_shape)

    def shift_error():
        return (_slot_logits(model, _shift_slots(x, fold), fold).roll(-1, dims=1) - _slot_logits(model, x, fold)).abs().max()

    assert shift_error() > 1e-3  # per-channel statistics break the slot symmetry the weights have
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    shared_before = [(m.running_mean[-(m.num_features % fold) or m.num_features:].clone()) for m in bns]
    assert pool_slot_statistics_(model, fold) == len(bns)
    assert shift_error() < 1e-4
    assert any(m.num_features % fold for m in bns)
    for m, before in zip(bns, shared_before):
        g = m.num_features // fold
        torch.testing.assert_close(m.running_mean[:g], m.running_mean[g:2 * g])
        if m.num_features % fold:  # shared channels keep their own statistics
            torch.testing.assert_close(m.running_mean[fold * g:], before)
    assert pool_slot_statistics_(model, 1) == 0
