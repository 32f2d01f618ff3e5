"""The GPU check's CPU-side logic: it refuses cleanly without CUDA, fits its budget by leaving
engines out, compares engines with eager fp32 and tabulates f=4 over f=1 per engine."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from foldcnn.bench import make_configs
from foldcnn.bench.gpu_check import GPU_TARGET, NO_CUDA, check_engine, fit_budget, format_gpu_table
from foldcnn.models.game import GAME_TASKS

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "published" / "gpu_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refuses_cleanly_without_cuda(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _script().main(["--out", str(tmp_path / "gpu")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == NO_CUDA and "Traceback" not in err
    assert not (tmp_path / "gpu").exists()  # nothing written, nothing half-done


def test_fit_budget_leaves_out_tensorrt_then_compile():
    configs = make_configs(list(GAME_TASKS), (1, 4), (1024,), (("eager", "fp16"), ("compile", "fp16"),
                                                                 ("tensorrt", "fp16")), device="cuda")
    kept, notes = fit_budget(configs, 3, 0.2, budget_s=1e6)
    assert kept == configs and notes == []
    kept, notes = fit_budget(configs, 3, 0.2, budget_s=60)
    assert {c.backend for c in kept} == {"eager"}
    assert [n.split()[0] for n in notes] == ["tensorrt", "compile"] and "budget" in notes[0]


class _Engine:
    def __init__(self, out):
        self.out = out

    def run(self, x):
        return self.out


def test_check_engine_judges_relative_to_the_logits_scale():
    ref = np.array([[10.0, -5.0], [2.0, 1.0]], np.float32)
    x = torch.zeros(2, 3, 4, 4)
    assert check_engine(_Engine(ref + 0.05), ref, x, "fp16")["ok"]  # 0.5% of the scale
    bad = check_engine(_Engine(ref + 1.0), ref, x, "fp16")
    assert not bad["ok"] and bad["max_rel_diff"] == pytest.approx(0.1)
    assert not check_engine(_Engine(ref[:1]), ref, x, "fp16")["ok"]  # wrong shape


def test_gpu_table_ratio_on_the_same_engine():
    def rec(fold, backend, ips):
        return {"model": "sot-timer", "backend": backend, "precision": "fp16", "fold": fold, "images_per_s": ips}

    text = format_gpu_table([rec(1, "eager", 100_000), rec(4, "eager", 300_000), rec(1, "tensorrt", 200_000),
                             rec(4, "tensorrt", 400_000), rec(4, "compile", 1.0)])  # no f=1 row: left out
    lines = text.splitlines()
    assert len(lines) == 4 and "compile" not in text
    assert "3.00x" in lines[2] and lines[2].endswith("met") and GPU_TARGET == 2.5
    assert "2.00x" in lines[3] and lines[3].endswith("not met")
