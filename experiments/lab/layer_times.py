"""Which layers does folding speed up? Layer-by-layer times of the original and a folded CNN.

    python experiments/lab/layer_times.py apex-squad-count --dtype bf16 --threads 2
    python experiments/lab/layer_times.py game --dtype bf16 --threads 2 --summary

Runs each layer of the model's feature stack alone, in torch eager, channels_last, on the
activations the previous layer produced for a batch of `--batch-size` images, and reports the
median milliseconds per batch over interleaved trials (f=1 and f=f alternate, layer by layer),
with GFLOP/s for each convolution. The convolutions are the same oneDNN calls a torch.compile'd
model makes (`aten::mkldnn_convolution`); the ReLU and pooling passes are what inductor fuses, so
their eager times are an upper bound on what compile spends there. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch
from profile_compile import DTYPES, build

from foldcnn.bench.timing import WallTimer, time_block
from foldcnn.models import list_models


def conv_flops(layer: torch.nn.Module, out: torch.Tensor) -> int:
    if not isinstance(layer, torch.nn.Conv2d):
        return 0
    kh, kw = layer.kernel_size
    return 2 * out.numel() * (layer.in_channels // layer.groups) * kh * kw


def layer_steps(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) for each step of the forward pass: every feature layer, then the head."""
    features = getattr(model, "features", None)
    if not isinstance(features, torch.nn.Sequential):
        raise SystemExit(f"{type(model).__name__} has no `features` stack; this script times the game "
                         "and NoScope CNNs")
    head = torch.nn.Sequential(model.flatten, model.classifier)
    return [(type(m).__name__, m) for m in features] + [("Flatten+Linear", head)]


def measure(name: str, folds: list[int], dtype: torch.dtype, batch_size: int, trials: int,
            min_seconds: float) -> dict[int, list[dict]]:
    """{fold: [{layer, ms, flops}, ...]} with median ms per batch of ``batch_size`` images."""
    plans = {}
    with torch.inference_mode():
        for fold in folds:
            model, x = build(name, fold, dtype, batch_size)
            steps = []
            for label, layer in layer_steps(model):
                y = layer(x)
                for _ in range(2):  # warm up: oneDNN picks and caches its kernel on the first calls
                    layer(x)
                steps.append({"layer": label, "module": layer, "input": x, "flops": conv_flops(layer, y), "s": []})
                x = y
            plans[fold] = steps
        for _ in range(trials):
            for i in range(len(plans[folds[0]])):
                for fold in folds:
                    step = plans[fold][i]
                    calls, seconds = time_block(partial(step["module"], step["input"]), min_seconds, WallTimer())
                    step["s"].append(seconds / calls)
    return {fold: [{"layer": s["layer"], "ms": 1e3 * statistics.median(s["s"]), "flops": s["flops"]}
                   for s in steps] for fold, steps in plans.items()}


def totals(steps: list[dict]) -> dict[str, float]:
    conv = sum(s["ms"] for s in steps if s["flops"])
    return {"conv": conv, "rest": sum(s["ms"] for s in steps) - conv}


def print_layers(name: str, result: dict[int, list[dict]]) -> None:
    folds = sorted(result)
    base, top = folds[0], folds[-1]
    print(f"\n{name}: ms per batch (GFLOP/s for convolutions); last column f={base} ms / f={top} ms")
    head = "  ".join(f"{'f=' + str(f) + ' ms':>9}  {'GFLOP/s':>7}" for f in folds)
    print(f"{'#':>2}  {'layer':<15}  {head}  {'speed-up':>8}")
    for i, step in enumerate(result[base]):
        cells = []
        for f in folds:
            s = result[f][i]
            rate = f"{s['flops'] / s['ms'] / 1e6:7.0f}" if s["flops"] else f"{'':>7}"
            cells.append(f"{s['ms']:9.3f}  {rate}")
        print(f"{i:>2}  {step['layer']:<15}  {'  '.join(cells)}  {step['ms'] / result[top][i]['ms']:7.2f}x")
    tb, tt = totals(result[base]), totals(result[top])
    for part in ("conv", "rest"):
        print(f"    {part + ' total':<15}  {tb[part]:9.3f} ms -> {tt[part]:9.3f} ms  {tb[part] / tt[part]:7.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", help="a model, a comma-separated list, or 'game' for the six game CNNs")
    p.add_argument("--fold", type=int, default=4, help="the folded model compared with f=1 (default 4)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--batch-size", type=int, default=1024, help="images per batch (both models)")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=0.1, help="per layer and trial")
    p.add_argument("--threads", type=int, default=None, help="default: all cores")
    p.add_argument("--summary", action="store_true", help="one line per model instead of every layer")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    names = list_models("game") if a.models == "game" else a.models.split(",")
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(list_models())}")
    print(f"{a.dtype}, {a.batch_size} images per batch, {torch.get_num_threads()} thread(s), eager, "
          f"median of {a.trials} interleaved trials")
    if a.summary:
        print(f"{'model':<18}  {'convs f=1 ms':>12}  {'f=' + str(a.fold) + ' ms':>8}  {'speed-up':>8}  "
              f"{'rest f=1 ms':>11}  {'f=' + str(a.fold) + ' ms':>8}  {'speed-up':>8}")
    for name in names:
        result = measure(name, [1, a.fold], DTYPES[a.dtype], a.batch_size, a.trials, a.min_seconds)
        if not a.summary:
            print_layers(name, result)
            continue
        b, t = totals(result[1]), totals(result[a.fold])
        print(f"{name:<18}  {b['conv']:12.2f}  {t['conv']:8.2f}  {b['conv'] / t['conv']:7.2f}x  "
              f"{b['rest']:11.2f}  {t['rest']:8.2f}  {b['rest'] / t['rest']:7.2f}x", flush=True)


if __name__ == "__main__":
    main()
