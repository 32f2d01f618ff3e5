"""GPU check: every CUDA engine against eager fp32, then f=1 vs f=4 at batch 1,024 in fp16.

    python experiments/published/gpu_check.py --out runs/gpu-check      # under 8 minutes on one GPU

1. Correctness: each engine usable on CUDA here (eager, CUDA graphs, torch.compile, ONNX Runtime's
   CUDA provider, and TensorRT when torch-tensorrt is installed) runs two game CNNs at f=1 and
   f=4 on random folded inputs; its logits must equal eager fp32 on the CPU within a tolerance
   relative to their scale (foldcnn.bench.gpu_check.TOLERANCE).
2. Throughput: the ``gpu-check`` preset of ``foldcnn bench`` (six game CNNs, f=1 and f=4, batch
   1,024 images, fp16 on every CUDA engine, ORT CUDA fp32), leaving out torch.compile and then
   TensorRT when the estimate passes the budget (said in the output).

Writes ``<out>/correctness.json``, ``<out>/bench.json`` and prints the table of f=4 over f=1 on
each engine against the paper's 2.5x. Without a CUDA GPU it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from foldcnn.bench.gpu_check import NO_CUDA, check_engine, cuda_engines, fit_budget, format_gpu_table

CHECK_MODELS = ("apex-squad-count", "sot-timer")  # the smallest game CNN and the two-unit one


def correctness(out: Path, tensorrt: bool) -> list[dict]:
    from foldcnn.backends import create_backend
    from foldcnn.models import create_model

    rows = []
    for name in CHECK_MODELS:
        for fold in (1, 4):
            torch.manual_seed(0)
            model = create_model(name, fold=fold).eval()
            x = torch.rand(64, *model.folded_input_shape, generator=torch.Generator().manual_seed(fold))
            with torch.no_grad():
                ref = copy.deepcopy(model)(x).numpy()
            for backend, precision in cuda_engines(tensorrt):
                row = {"model": name, "fold": fold, "backend": backend, "precision": precision}
                try:
                    if backend == "tensorrt":
                        from foldcnn.bench.trt import TensorRTRunner

                        engine = TensorRTRunner(copy.deepcopy(model), precision=precision, max_batch=64)
                    else:
                        engine = create_backend(copy.deepcopy(model), backend, precision=precision, device="cuda",
                                                max_batch=64)
                    row.update(check_engine(engine, ref, x, precision))
                    engine.close()
                except Exception as e:  # noqa: BLE001 - one engine failing is a result, not the end
                    row.update({"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
                rows.append(row)
                print(f"{name} f={fold} {backend}/{precision}: "
                      + ("ok" if row["ok"] else "FAILED") + f" ({row.get('max_rel_diff', row.get('error'))})",
                      flush=True)
    (out / "correctness.json").write_text(json.dumps(rows, indent=2))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu-check", help="folder for correctness.json and bench.json")
    p.add_argument("--minutes", type=float, default=7.0, help="budget of the throughput sweep (estimated)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    import importlib.util

    from foldcnn.bench import build_records, machine_info, preset_configs, preset_peaks, run_sweep, write_json
    from foldcnn.bench.configs import skip_unavailable

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info("cuda")
    print(f"GPU: {machine.get('gpu')}, CUDA {machine.get('cuda')}, torch {machine['torch']}", flush=True)
    tensorrt = importlib.util.find_spec("torch_tensorrt") is not None
    checks = correctness(out, tensorrt)
    preset, configs = preset_configs("gpu-check")
    runnable, skipped = skip_unavailable(configs)
    spent = time.perf_counter() - start
    runnable, notes = fit_budget(runnable, preset.trials, preset.min_seconds, 60 * args.minutes - spent - 30)
    for note in notes:
        print(f"note: {note}", flush=True)
    outcome = run_sweep(runnable, trials=preset.trials, min_seconds=preset.min_seconds, progress=True)
    peaks = preset_peaks(preset, runnable)
    records = build_records(outcome.results, peaks)
    skipped += outcome.skipped
    write_json(out / "bench.json", records, peaks=peaks, machine=machine,
               settings={"preset": preset.name, "notes": notes, "command": ["python", *sys.argv]},
               skipped=[{"config": c.label(), "reason": why} for c, why in skipped])
    print("\n" + format_gpu_table(records))
    for c, why in skipped:
        print(f"  not run: {c.label()}: {why}")
    failed = [r for r in checks if not r["ok"]]
    print(f"\ncorrectness: {len(checks) - len(failed)}/{len(checks)} engine checks passed; "
          f"total {(time.perf_counter() - start) / 60:.1f} min; {out}/bench.json")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
