"""Where does a torch.compile'd CNN spend its time on the CPU: convolutions or the fused rest?

    python experiments/lab/profile_compile.py apex-squad-count --folds 1 4 --dtype bf16

Compiles each fold's model the way the `compile` backend does (eval, channels_last, weights and
inputs cast to the precision), runs a batch of the same number of images through it under
torch.profiler and splits the time into oneDNN convolutions (`aten::mkldnn_convolution`), the
classifier's matmul and everything inductor generated itself (ReLU, max-pool, layout copies).
Numbers are per batch of `--batch-size` images; run on a quiet machine.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from foldcnn.models import create_model
from foldcnn.precision import TORCH_DTYPES

DTYPES = {p: TORCH_DTYPES[p] for p in ("fp32", "bf16")}


def build(name: str, fold: int, dtype: torch.dtype, batch_size: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model as the torch backends run it (eval, channels_last, weights in ``dtype``) and one
    random input of ``batch_size`` images, folded."""
    model = create_model(name, fold=fold).eval().to(dtype).to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch_size // fold, *model.folded_input_shape).to(dtype)
    return model, x.contiguous(memory_format=torch.channels_last)


def profile_fold(name: str, fold: int, dtype: torch.dtype, batch_size: int, iters: int) -> dict[str, float]:
    model, x = build(name, fold, dtype, batch_size)
    compiled = torch.compile(model, dynamic=False)
    with torch.inference_mode():
        for _ in range(3):
            compiled(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iters):
                compiled(x)
    events = {e.key: e.self_cpu_time_total / 1e3 / iters for e in prof.key_averages()}
    total = sum(events.values())
    conv = events.get("aten::mkldnn_convolution", 0.0)
    matmul = sum(v for k, v in events.items() if k in ("aten::addmm", "aten::mm", "aten::linear"))
    return {"total_ms": total, "conv_ms": conv, "matmul_ms": matmul, "rest_ms": total - conv - matmul}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--folds", nargs="+", type=int, default=[1, 4])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--batch-size", type=int, default=1024, help="images per batch (all folds)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="default: all cores")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"{a.model}, {a.dtype}, {a.batch_size} images per batch, {torch.get_num_threads()} thread(s), "
          f"ms per batch:")
    print(f"{'f':>2}  {'total':>8}  {'convs':>8}  {'matmul':>8}  {'inductor rest':>13}")
    for fold in a.folds:
        r = profile_fold(a.model, fold, DTYPES[a.dtype], a.batch_size, a.iters)
        print(f"{fold:>2}  {r['total_ms']:>8.2f}  {r['conv_ms']:>8.2f}  {r['matmul_ms']:>8.2f}  "
              f"{r['rest_ms']:>13.2f}")


if __name__ == "__main__":
    main()
