import pytest
import torch

import foldcnn
from foldcnn import count_params, create_model, fold_images, list_models, unfold_logits
from foldcnn.models import GAME_TASKS, model_entry, model_from_config
from foldcnn.models.base import scaled_width

# docs/design.md, "The paper's models": parameter counts with the paper's exact widths (channel_multiple=1).
PAPER_PARAMS = {
    "lol-gold-fraction": (33_867, 69_759, 106_988, 150_268),
    "lol-gold-int": (60_367, 142_559, 235_988, 361_868),
    "lol-timer-minutes": (37_958, 80_971, 126_836, 182_792),
    "apex-squad-count": (33_086, 67_603, 103_160, 143_976),
    "sot-coin-count": (32_887, 67_061, 102_203, 142_412),
    "sot-timer": (60_451, 121_367, 183_143, 251_708),
}
NOSCOPE_PARAMS = {
    "noscope-coral": 1_283_154,
    "noscope-night": 1_283_154,
    "noscope-taipei": 1_318_818,
    "noscope-roundabout": 360_578,
}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
@pytest.mark.parametrize("fold", [1, 2, 3, 4])
def test_game_param_counts_match_paper(name, fold):
    model = create_model(name, fold=fold, channel_multiple=1)
    assert count_params(model) == PAPER_PARAMS[name][fold - 1]


@pytest.mark.parametrize("name", sorted(NOSCOPE_PARAMS))
def test_noscope_param_counts_match_paper(name):
    assert count_params(create_model(name)) == NOSCOPE_PARAMS[name]


def test_cifar_resnet18_params():
    # The CIFAR ResNet-18 with a 10-way head has 11,173,962 parameters (well-known figure).
    assert count_params(create_model("cifar-resnet18")) == 11_173_962


def test_paper_widths():
    assert [scaled_width(32, f ** 0.5, 1) for f in (1, 2, 3, 4)] == [32, 45, 55, 64]
    assert [scaled_width(8, f ** 0.5, 1) for f in (1, 2, 3, 4)] == [8, 11, 13, 16]
    assert [scaled_width(32, f ** 0.5, 8) for f in (1, 2, 3, 4)] == [32, 48, 56, 64]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("fold", [1, 3])
def test_every_model_interface(name, fold):
    model = create_model(name, fold=fold).eval()
    entry = model_entry(name)
    assert model.fold == fold
    assert model.num_classes == entry.num_classes
    assert model.input_shape == entry.input_shape
    c, h, w = model.input_shape
    with torch.no_grad():
        y = model(torch.rand(2, fold * c, h, w))
    assert y.shape == (2, fold * model.num_classes)


@pytest.mark.parametrize("name", ["lol-gold-fraction", "noscope-roundabout", "sot-timer"])
def test_fold1_is_the_original_cnn(name):
    # With fold=1, classify() on images equals the plain forward on the same images.
    model = create_model(name).eval()
    x = torch.rand(5, *model.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(model.classify(x), model(x))


def test_classify_pads_and_keeps_images_independent():
    torch.manual_seed(0)
    model = create_model("sot-coin-count", fold=4).eval()
    x = torch.rand(7, *model.input_shape)
    with torch.no_grad():
        out = model.classify(x)
        assert out.shape == (7, model.num_classes)
        # Manual: pad with zeros to 8, fold, run, unfold.
        padded = torch.cat([x, torch.zeros(1, *model.input_shape)])
        manual = unfold_logits(model(fold_images(padded, 4)), 4)[:7]
        torch.testing.assert_close(out, manual)
        # Results of the first fold group do not depend on images outside it.
        y = model.classify(x[:4])
        torch.testing.assert_close(y, out[:4])


def test_game_builder_accepts_any_size_and_classes():
    m = create_model("lol-gold-fraction", fold=2, num_classes=5, input_size=(24, 24))
    assert m.input_shape == (3, 24, 24) and m.num_classes == 5
    assert m(torch.rand(3, 6, 24, 24)).shape == (3, 10)


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        create_model("lol-gold-fraction", input_size=(8, 8))


def test_unknown_model_lists_known_ones():
    with pytest.raises(KeyError, match="lol-gold-fraction") as e:
        create_model("lol-gold-fractoin")
    assert "Did you mean" in str(e.value)


def test_bad_builder_option_is_clear():
    with pytest.raises(TypeError, match="does not accept"):
        create_model("noscope-coral", units=3)


def test_channel_input_mismatch_is_readable():
    m = create_model("lol-gold-fraction", fold=2)
    with pytest.raises(ValueError, match=r"expects folded inputs of shape \(N/2, 6, 22, 52\)"):
        m.check_input(torch.rand(2, 3, 22, 52))
    with pytest.raises(ValueError, match="expected images"):
        m.classify(torch.rand(2, 1, 22, 52))


def test_config_rebuilds_the_same_architecture():
    m = create_model("lol-gold-fraction", fold=3, channel_multiple=1, num_classes=7, input_size=(30, 40))
    d = m.config.to_dict()
    rebuilt = model_from_config(d)
    assert count_params(rebuilt) == count_params(m)
    assert rebuilt.input_shape == m.input_shape and rebuilt.fold == 3


def test_duplicate_registration_is_an_error():
    from foldcnn.models import register_model

    with pytest.raises(ValueError, match="registered twice"):
        register_model("lol-gold-fraction", family="game", description="", num_classes=1,
                       input_shape=(3, 1, 1))(lambda **kw: None)


def test_scaled_baseline_has_fewer_flops_and_smaller_input():
    from torch.utils.flop_counter import FlopCounterMode

    def flops(m):
        with FlopCounterMode(display=False) as fc:
            m(torch.rand(1, *m.folded_input_shape))
        return fc.get_total_flops()

    for task in GAME_TASKS:
        base, scaled = create_model(task), create_model(f"{task}-scaled")
        assert scaled.input_shape[1] < base.input_shape[1]
        assert flops(scaled) < flops(base)


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, foldcnn, torch; "
        "bad = [m for m in ('onnxruntime', 'ray', 'matplotlib', 'av', 'fastapi') if m in sys.modules]; "
        "assert not bad, bad; "
        "assert not torch.cuda.is_initialized()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert foldcnn.__version__


def test_width_mult_at_fold_1_is_a_narrower_cnn_and_zero_channels_is_refused():
    from foldcnn.errors import UsageError

    full, half = create_model("apex-squad-count"), create_model("apex-squad-count", width_mult=0.5, channel_multiple=1)
    convs = lambda m: [c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d)]  # noqa: E731
    assert [w // 2 for w in convs(full)] == convs(half) and half.fold == 1
    assert half.config.width_mult == 0.5 and model_from_config(half.config).config == half.config
    x = torch.rand(3, *half.input_shape)
    assert half.classify(x).shape == (3, half.num_classes)
    with pytest.raises(UsageError, match="0 channels wide"):
        create_model("apex-squad-count", width_mult=0.01)
    with pytest.raises(UsageError, match="positive"):
        create_model("apex-squad-count", width_mult=0)


def test_analyze_width_mult_cli(capsys):
    import json

    from foldcnn.cli import main

    assert main(["analyze", "apex-squad-count", "--folds", "1,4", "--width-mult", "0.5", "--json", "-"]) == 0
    recs = json.loads(capsys.readouterr().out)
    recs = recs["records"] if isinstance(recs, dict) else recs
    assert [r["width_mult"] for r in recs] == [0.5, 0.5]
    assert main(["analyze", "apex-squad-count", "--folds", "1", "--json", "-"]) == 0
    full = json.loads(capsys.readouterr().out)
    full = full["records"] if isinstance(full, dict) else full
    assert full[0]["width_mult"] == 1.0 and recs[0]["flops_per_image"] < full[0]["flops_per_image"] / 2
