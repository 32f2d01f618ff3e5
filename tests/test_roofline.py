"""Roofline prediction and device table (foldcnn.analysis.roofline)."""

from __future__ import annotations

import pytest
import torch

from foldcnn.precision import BYTES_PER_ELEMENT
from foldcnn.analysis import DEVICES, Device, analyze, attainable, measure_peak
from foldcnn.analysis.roofline import best_matmul_rate, size_note
from foldcnn.models import create_model


@pytest.fixture(scope="module")
def lol_fp16():
    return {f: analyze(create_model("lol-gold-fraction", fold=f, channel_multiple=1)) for f in (1, 4)}


@pytest.mark.parametrize("name", sorted(DEVICES))
def test_device_table_is_sane(name):
    d = DEVICES[name]
    assert d.name == name and d.source.startswith("https://")
    assert set(d.peak_flops_per_s) <= set(BYTES_PER_ELEMENT) and {"fp32", "fp16"} <= set(d.peak_flops_per_s)
    assert 1e11 < d.bytes_per_s < 1e13
    # Tensor-core half precision is faster than plain fp32 on all of these GPUs.
    assert d.peak("fp16") > 4 * d.peak("fp32")
    if "int8" in d.peak_flops_per_s:
        assert d.peak("int8") == 2 * d.peak("fp16")


def test_datasheet_values_pinned():
    # Dense datasheet figures; a change here must come with a new citation.
    assert DEVICES["h200"].peak("fp16") == 989.5e12 and DEVICES["h200"].bytes_per_s == 4.8e12
    assert DEVICES["h100"].peak("fp16") == 989.5e12 and DEVICES["h100"].bytes_per_s == 3.35e12
    assert DEVICES["a100"].peak("tf32") == 156e12 and DEVICES["a100"].bytes_per_s == 2.039e12
    assert DEVICES["v100"].peak("fp16") == 125e12 and DEVICES["v100"].bytes_per_s == 900e9
    assert DEVICES["t4"].peak("int8") == 130e12 and DEVICES["t4"].bytes_per_s == 320e9


def test_memory_and_compute_roofs(lol_fp16):
    r = lol_fp16[1]
    ai = r.arithmetic_intensity
    slow_memory = Device("m", {"fp16": 1e12}, bytes_per_s=0.5e12 / ai)  # roof at 0.5e12 FLOP/s
    p = attainable(r, slow_memory, "fp16")
    assert p.bound == "memory" and p.flops_per_s == pytest.approx(0.5e12)
    # Memory-bound throughput is bandwidth over bytes per image.
    assert p.images_per_s == pytest.approx(slow_memory.bytes_per_s / r.bytes_per_image)
    fast_memory = Device("c", {"fp16": 1e12}, bytes_per_s=2e12 / ai)
    p = attainable(r, fast_memory, "fp16")
    assert p.bound == "compute" and p.images_per_s == pytest.approx(1e12 / r.flops_per_image)
    assert p.ridge_point == pytest.approx(ai / 2)


def test_folding_gain_on_h200_is_the_intensity_gain(lol_fp16):
    # Both are below the H200 ridge point (~206 FLOPs/byte), so images/s scale with
    # AI / (FLOPs per image): the paper's mechanism.
    p1, p4 = (attainable(lol_fp16[f], DEVICES["h200"], "fp16") for f in (1, 4))
    assert p1.bound == p4.bound == "memory"
    gain = (lol_fp16[4].arithmetic_intensity / lol_fp16[1].arithmetic_intensity) \
        * (lol_fp16[1].flops_per_image / lol_fp16[4].flops_per_image)
    assert p4.images_per_s / p1.images_per_s == pytest.approx(gain)
    assert 1.8 < gain < 2.2


def test_attainable_rejects_mismatched_dtype(lol_fp16):
    with pytest.raises(ValueError, match="bytes_per_element=4"):
        attainable(lol_fp16[1], DEVICES["a100"], "fp32")
    with pytest.raises(ValueError, match="no bf16"):
        attainable(lol_fp16[1], DEVICES["v100"], "bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        attainable(lol_fp16[1], DEVICES["h100"], "fp8")


def test_measure_peak_quick_and_restores_threads():
    threads = torch.get_num_threads()
    d = measure_peak("fp32", threads=1, size=256, copy_mib=8, repeats=2)
    assert torch.get_num_threads() == threads
    assert d.name == "measured" and list(d.peak_flops_per_s) == ["fp32"]
    assert 1e8 < d.peak("fp32") < 1e14 and 1e8 < d.bytes_per_s < 1e13
    assert "1 thread" in d.source
    r = analyze(create_model("sot-coin-count"), bytes_per_element=4)
    assert attainable(r, d, "fp32").images_per_s > 0


@pytest.mark.skipif(not hasattr(torch, "_int_mm"), reason="torch without int8 matmul")
def test_measure_peak_int8():
    d = measure_peak("int8", size=256, copy_mib=8, repeats=1)
    assert d.peak("int8") > 0


def test_best_matmul_rate_takes_the_fastest_size():
    secs = {1024: 2 * 1024**3 / 1e12, 2048: 2 * 2048**3 / 2.4e12, 3072: 2 * 3072**3 / 2.7e12}
    rate, best = best_matmul_rate(secs.__getitem__, (1024, 2048, 3072))
    assert best == 3072 and rate == pytest.approx(2.7e12)
    assert size_note((1024, 2048, 3072), best) == "3072x3072 (the fastest of 1024/2048/3072)"
    assert size_note(2048, 2048) == "2048x2048"
    for bad in ((), (0,), (512, "x"), 1.5):
        with pytest.raises(ValueError, match="matmul sizes"):
            best_matmul_rate(secs.__getitem__, bad)


def test_measure_peak_over_sizes_says_which_won():
    d = measure_peak("fp32", threads=1, size=(64, 128), copy_mib=4, repeats=1)
    assert "the fastest of 64/128" in d.source and d.peak("fp32") > 0


def test_measure_peak_rejects_unmeasurable_dtype():
    with pytest.raises(ValueError, match="measure_peak supports"):
        measure_peak("tf32", size=64, copy_mib=1, repeats=1)
    with pytest.raises(ValueError):
        measure_peak("fp32", threads=0)
