"""Where OpenVINO spends the time, layer by layer, for the original and a folded CNN.

    python experiments/lab/openvino_layers.py sot-timer --precision int8 --fold 4
    python experiments/lab/openvino_layers.py game --precision int8 --summary

Builds the openvino backend (its defaults) for f=1 and f=--fold, compiles the same OpenVINO
model again for one static batch with the latency hint (one inference on all threads) and
performance counters on (``PERF_COUNT``), runs a
batch of --batch-size images --runs times per trial, alternating f=1 and f=f over --trials
trials, and reports each executed node's median microseconds per 1,000 images with its kernel
(``exec_type``, e.g. ``brgconv_avx512_core_vnni_I8``). ``--summary`` prints one line per model:
the time per 1,000 images by node type (convolutions, pooling, the rest) at f=1 and f=f.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from foldcnn.backends.openvino import OpenVINOBackend
from foldcnn.models import create_model
from foldcnn.models.game import GAME_TASKS


def profiled(name: str, fold: int, precision: str, batch: int, threads: int | None):
    """(infer request with PERF_COUNT on, folded input) for ``name`` at ``fold``."""
    import openvino as ov

    torch.manual_seed(0)
    model = create_model(name, fold=fold).eval()
    cal = torch.randint(0, 256, (256, *model.input_shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    folded = batch // fold
    b = OpenVINOBackend(model, precision=precision, threads=threads, max_batch=folded, calibration=cal)
    ir = b.ov_model.clone()
    ir.reshape([folded, *model.folded_input_shape])
    # One inference on all threads (the latency hint): per-layer times of one call, not of one stream.
    config = {**b.config, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
    request = ov.Core().compile_model(ir, "CPU", config).create_infer_request()
    x = np.random.default_rng(0).random((folded, *model.folded_input_shape), dtype=np.float32)
    return request, x


def node_times(request, x, runs: int) -> dict[tuple[str, str, str], float]:
    """(node name, type, kernel) -> mean microseconds per call over ``runs`` calls."""
    request.infer({0: x})
    total: dict[tuple[str, str, str], float] = {}
    for _ in range(runs):
        request.infer({0: x})
        for p in request.profiling_info:
            if p.status == p.Status.EXECUTED:
                key = (p.node_name, p.node_type, p.exec_type)
                total[key] = total.get(key, 0.0) + p.real_time.total_seconds() * 1e6
    return {k: v / runs for k, v in total.items()}


def kind(node_type: str) -> str:
    t = node_type.lower()
    if "conv" in t:
        return "conv"
    if "pool" in t:
        return "pool"
    if t in ("fullyconnected", "matmul"):
        return "linear"
    return "other"


def measure(name: str, fold: int, precision: str, batch: int, runs: int, trials: int, threads):
    """{fold: {node key: median us per 1,000 images}} for f=1 and f=fold, interleaved."""
    built = {f: profiled(name, f, precision, batch, threads) for f in (1, fold)}
    samples: dict[int, dict] = {1: {}, fold: {}}
    for _ in range(trials):
        for f, (request, x) in built.items():
            for k, us in node_times(request, x, runs).items():
                samples[f].setdefault(k, []).append(us * 1000 / batch)
    return {f: {k: statistics.median(v) for k, v in s.items()} for f, s in samples.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a game CNN, or 'game' for all six")
    p.add_argument("--fold", type=int, default=4)
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="int8")
    p.add_argument("--batch-size", type=int, default=1024, help="images per call (a multiple of --fold)")
    p.add_argument("--runs", type=int, default=20, help="calls per trial")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--summary", action="store_true", help="one line per model: time by node kind")
    a = p.parse_args()
    names = list(GAME_TASKS) if a.model == "game" else [a.model]
    if a.summary:
        kinds = ("conv", "pool", "linear", "other")
        print(f"| model | f | {' | '.join(f'{k} us/1k images' for k in kinds)} | total |")
        print("|---|---|" + "---|" * (len(kinds) + 1))
    for name in names:
        times = measure(name, a.fold, a.precision, a.batch_size, a.runs, a.trials, a.threads)
        if a.summary:
            for f, t in times.items():
                by = {k: sum(v for key, v in t.items() if kind(key[1]) == k) for k in kinds}
                print(f"| {name} | {f} | " + " | ".join(f"{by[k]:,.1f}" for k in kinds) + f" | {sum(t.values()):,.1f} |",
                      flush=True)
            continue
        print(f"\n{name}, {a.precision}, batch {a.batch_size} images: microseconds per 1,000 images")
        for f, t in times.items():
            print(f"\nf={f} (total {sum(t.values()):,.1f})\n| node | type | kernel | us / 1k images |\n|---|---|---|---|")
            for (node, typ, exec_type), us in t.items():
                print(f"| {node} | {typ} | {exec_type} | {us:,.1f} |")


if __name__ == "__main__":
    main()
