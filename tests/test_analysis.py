"""Counting FLOPs, bytes and arithmetic intensity (foldcnn.analysis.counting) and `foldcnn analyze`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from foldcnn.analysis import AnalysisReport, analyze, count_layer, summarize
from foldcnn.cli import main
from foldcnn.models import create_model

# docs/design.md, "Arithmetic intensity": the paper's arithmetic intensities, fp16, B = 1024 images, paper widths.
PAPER_AI = {
    "lol-gold-fraction": (87.33, 126.73, 158.38, 187.79),
    "apex-squad-count": (88.63, 128.36, 160.12, 189.44),
    "sot-coin-count": (88.15, 127.79, 159.55, 188.97),
    "sot-timer": (102.27, 146.46, 181.30, 213.03),
    "noscope-coral": (58.70, 82.44, 101.34, 118.75),
}
PAPER_CASES = [(m, f, ai[f - 1]) for m, ai in PAPER_AI.items() for f in (1, 2, 3, 4)]


def paper_model(name: str, fold: int) -> nn.Module:
    return create_model(name, fold=fold, channel_multiple=1)


@pytest.mark.parametrize("name,fold,expected", PAPER_CASES)
def test_reproduces_paper_arithmetic_intensity(name, fold, expected):
    report = analyze(paper_model(name, fold), batch_size=1024, bytes_per_element=2)
    assert round(report.arithmetic_intensity, 2) == pytest.approx(expected, abs=1e-9)


def flop_counter_total(model: nn.Module, x: torch.Tensor) -> int:
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def grouped_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, groups=4, bias=False), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 5),
    )


@pytest.mark.parametrize(
    "name,fold",
    [("lol-gold-fraction", 1), ("lol-gold-fraction", 4), ("sot-timer", 3),
     ("noscope-roundabout", 2), ("lol-gold-int-scaled", 2), ("cifar-resnet18", 2)],
)
def test_flops_match_torch_flop_counter(name, fold):
    model = create_model(name, fold=fold)
    report = analyze(model)
    c, h, w = model.input_shape
    expected = flop_counter_total(model, torch.zeros(1, fold * c, h, w))
    per_input_without_bias = (report.flops_per_image - report.bias_adds_per_image) * fold
    assert per_input_without_bias == pytest.approx(expected, rel=0, abs=1e-6)


def test_grouped_conv_matches_torch_flop_counter():
    model = grouped_net()
    report = analyze(model, input_shape=(4, 7, 7))
    assert report.flops_per_image - report.bias_adds_per_image == flop_counter_total(model, torch.zeros(1, 4, 7, 7))
    grouped = report.layers[1]
    assert grouped.macs == 8 * 3 * 3 * (8 // 4) * 9 and grouped.bias_adds == 0


def test_lol_gold_fraction_flops_per_image():
    f1 = analyze(paper_model("lol-gold-fraction", 1))
    f4 = analyze(paper_model("lol-gold-fraction", 4))
    # docs/design.md, "Arithmetic intensity": 16.65e6 FLOPs per image without bias adds (FlopCounterMode's count).
    assert f1.flops_per_image - f1.bias_adds_per_image == pytest.approx(16.65e6, rel=1e-3)
    assert 1.10 <= f4.flops_per_image / f1.flops_per_image <= 1.13


def test_interior_layer_flops_per_image_unchanged_by_folding():
    # An interior conv widened 32 -> 64 sees 1/4 of the inputs: MACs per image are equal,
    # while its activation elements per image halve (the sqrt(f) gain in intensity).
    f1 = analyze(paper_model("lol-gold-fraction", 1)).layers[1]
    f4 = analyze(paper_model("lol-gold-fraction", 4)).layers[1]
    assert (f1.input_shape[0], f4.input_shape[0]) == (32, 64)
    assert f4.macs == 4 * f1.macs
    assert f4.input_elements + f4.output_elements == 2 * (f1.input_elements + f1.output_elements)


def test_hand_counted_tiny_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 5, 6))
    r = analyze(model, batch_size=10, bytes_per_element=4, input_shape=(3, 4, 5))
    conv_out, lin_in = 4 * 4 * 5, 80
    flops = (2 * conv_out * 3 * 9 + conv_out) + (2 * 6 * lin_in + 6)
    weights = 4 * 3 * 9 + 6 * 80  # bias excluded
    acts = (3 * 4 * 5 + conv_out) + (lin_in + 6)
    assert r.flops_per_image == flops
    assert r.weight_elements == weights and r.activation_elements_per_input == acts
    assert r.bytes_per_image == pytest.approx(4 * (weights + 10 * acts) / 10)
    assert r.arithmetic_intensity == pytest.approx(flops / r.bytes_per_image)
    assert r.params == sum(p.numel() for p in model.parameters())
    assert [(layer.kind, layer.output_shape) for layer in r.layers] == [("conv", (4, 4, 5)), ("linear", (6,))]


def test_batch_size_amortizes_weights_only():
    model = paper_model("sot-coin-count", 2)
    small, large = analyze(model, batch_size=8), analyze(model, batch_size=1 << 20)
    assert small.flops_per_image == large.flops_per_image
    assert small.bytes_per_image > large.bytes_per_image
    # With weights amortized away, bytes per image are the activations of 1/f folded input.
    limit = 2 * large.activation_elements_per_input / 2
    assert large.bytes_per_image == pytest.approx(limit, rel=1e-3)


def test_fold_not_dividing_batch_counts_exact_fraction():
    r = analyze(paper_model("noscope-coral", 3), batch_size=1024)
    assert r.folded_inputs == pytest.approx(1024 / 3)
    assert r.bytes_per_batch == pytest.approx(2 * (r.weight_elements + 1024 / 3 * r.activation_elements_per_input))


def test_shared_module_weights_count_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 6)

        def forward(self, x):
            return self.fc(self.fc(x))

    r = analyze(Twice(), input_shape=(6,))
    assert len(r.layers) == 2 and r.weight_elements == 36
    assert r.flops_per_image == 2 * (2 * 36 + 6)


def test_model_left_as_found():
    model = create_model("noscope-roundabout", fold=2)
    model.train()
    model.features.eval()  # mixed modes must survive too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analyze(model)
    assert model.training and not model.features.training and model.classifier.training
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_input_shape_and_fold_for_plain_modules():
    net = grouped_net()
    with pytest.raises(ValueError, match="input_shape"):
        analyze(net)
    two = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8 * 5 * 5, 4))
    r = analyze(two, input_shape=(2, 7, 7), fold=2)  # images of 2 channels, folded in pairs
    assert r.fold == 2 and r.layers[0].input_shape == (4, 7, 7)
    assert r.flops_per_image * 2 == sum(layer.flops for layer in r.layers)


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"batch_size": 2.5}, {"bytes_per_element": 0},
                                {"bytes_per_element": True}])
def test_rejects_bad_arguments(kw):
    with pytest.raises(ValueError):
        analyze(create_model("lol-gold-fraction"), **kw)


def test_count_layer_and_summarize_are_pure():
    conv = nn.Conv2d(6, 4, (3, 1), groups=2, bias=True)
    row = count_layer(conv, (6, 10, 10), (4, 8, 10), name="c")
    assert row.macs == 4 * 8 * 10 * 3 * 3 and row.bias_adds == 320 and row.flops == 2 * row.macs + 320
    with pytest.raises(TypeError):
        count_layer(nn.ReLU(), (1,), (1,))
    with pytest.raises(ValueError, match="no Conv or Linear"):
        summarize([])
    r = summarize([row], fold=1, batch_size=4, bytes_per_element=1)
    assert row.weight_elements == 4 * (6 // 2) * 3 and row.bias_elements == 4
    assert r.bytes_per_image == pytest.approx((36 + 4 * (600 + 320)) / 4)


def test_report_is_frozen_and_serializable():
    r = analyze(create_model("lol-gold-fraction", fold=2))
    assert isinstance(r, AnalysisReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.fold = 3
    d = json.loads(json.dumps(r.to_dict()))
    assert d["fold"] == 2 and len(d["layers"]) == len(r.layers) == 6


def test_import_stays_light():
    code = ("import sys, foldcnn.analysis; "
            "bad = [m for m in ('matplotlib', 'onnxruntime') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------ CLI
def test_cli_json_reproduces_paper(capsys):
    rc = main(["analyze", "sot-timer", "--folds", "1,4", "--channel-multiple", "1",
               "--device", "h200", "--json"])
    assert rc == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["fold"]) for r in records] == [("sot-timer", 1), ("sot-timer", 4)]
    assert [round(r["arithmetic_intensity"], 2) for r in records] == [102.27, 213.03]
    assert records[1]["ai_vs_unfolded"] == pytest.approx(213.03 / 102.27, rel=1e-3)
    assert records[0]["bound"] == "memory" and records[1]["images_per_s"] > records[0]["images_per_s"]


def test_cli_table(capsys):
    assert main(["analyze", "lol-gold-fraction", "--folds", "1,2", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "fp32 (4 bytes/element)" in out and "images/s" not in out
    rows = [line for line in out.splitlines() if line.startswith("lol-gold-fraction")]
    assert len(rows) == 2 and "48,16 (x8)" in rows[1]


@pytest.mark.parametrize(
    "argv,message",
    [(["analyze", "no-such-model"], "unknown model"),
     (["analyze", "lol-gold-fraction", "--all"], "not both"),
     (["analyze", "lol-gold-fraction", "--device", "t4", "--precision", "bf16"], "no bf16 peak"),
     (["analyze", "lol-gold-fraction", "--folds", "0"], "folds")],
)
def test_cli_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
