"""Start-up and throughput of the torch-free inference path (docs/runtime.md), written to results/.

    git archive df37813 src | tar -x -C /tmp/base      # the tree before the torch-free path, as a baseline
    python experiments/published/startup.py --work /tmp/startup --runs 9 --baseline-src /tmp/base/src

Builds (once, in --work) a fold-4 lol-gold-fraction checkpoint with calibration images, its int8
graph exported with ``foldcnn export`` and cached in the checkpoint by one torch run, and one PNG.
Then, interleaved (case after case, --runs rounds), it times wall clock of

* ``python -m foldcnn predict model-int8.onnx --input one.png --out x.csv`` (slim: an .onnx + sidecar),
* ``python -m foldcnn predict ckpt --backend ort --precision int8 ...`` (slim: the cached graph),
* the same checkpoint command on ``--baseline-src`` (another foldcnn tree, e.g. the one before this
  change; its graph cached first by one untimed run), when given,

(wall and CPU seconds: on a shared machine the wall time includes waiting for a core), and the
model throughput of the same int8 graph on onnxruntime (``Predictor.predict_arrays`` over
--images uint8 images, 1 thread) in a process without torch (the exported graph) and in one that
built the model in torch (the torch path), alternating, --runs each. Medians are reported.
Writes results/startup_<cpu>_<commit>.json and results/slim-throughput_<cpu>_<commit>.json
(foldcnn.results.write_result: command, date, CPU, commit, load; every run's numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

THROUGHPUT = r'''
import sys, time, json
import numpy as np
mode, work, n, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
x = np.random.default_rng(0).integers(0, 256, (n, 3, 22, 52), dtype=np.uint8)
if mode == "slim":
    from foldcnn.infer import Predictor
    p = Predictor(work + "/model-int8.onnx", backend="ort", threads=1, workers=0, batch_size=1024)
else:
    import torch
    torch.set_num_threads(1)
    from foldcnn.checkpoints import load_calibration, load_checkpoint
    from foldcnn.infer import Predictor
    ck = load_checkpoint(work + "/ckpt")
    p = Predictor(ck.model, ck.class_names, backend="ort", precision="int8", threads=1, workers=0, batch_size=1024,
                  calibration=load_calibration(work + "/ckpt"))
p.predict_arrays(x[:2048])  # warm-up
wall, cpu = [], []
for _ in range(reps):
    t0, c0 = time.perf_counter(), time.process_time()
    p.predict_arrays(x)
    wall.append(n / (time.perf_counter() - t0)); cpu.append(n / (time.process_time() - c0))
print(json.dumps({"images_per_s": sorted(wall)[len(wall) // 2], "images_per_cpu_s": sorted(cpu)[len(cpu) // 2],
                  "torch_imported": "torch" in sys.modules}))
'''


def _sh(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)


def _env(src: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}


def prepare(work: Path) -> None:
    """The checkpoint, its int8 export and cached graph, one PNG (skipped where present)."""
    work.mkdir(parents=True, exist_ok=True)
    env = _env(SRC)
    if not (work / "ckpt" / "config.json").exists():
        code = ("import torch; torch.manual_seed(0)\n"
                "from foldcnn import create_model\nfrom foldcnn.checkpoints import save_checkpoint\n"
                "m = create_model('lol-gold-fraction', fold=4).eval()\n"
                "cal = torch.randint(0, 256, (256, *m.input_shape), dtype=torch.uint8)\n"
                f"save_checkpoint({str(work / 'ckpt')!r}, m, [str(i) for i in range(m.num_classes)], "
                "calibration_images=cal)\n"
                "import numpy as np; from PIL import Image\n"
                "Image.fromarray(np.random.default_rng(1).integers(0, 256, (22, 52, 3), dtype=np.uint8))"
                f".save({str(work / 'one.png')!r})\n")
        _sh([sys.executable, "-c", code], env)
    if not (work / "model-int8.onnx").exists():
        _sh([sys.executable, "-m", "foldcnn", "export", str(work / "ckpt"), "--out", str(work / "model-int8.onnx"),
             "--precision", "int8"], env)
    _sh(_ckpt_cmd(work), env)  # caches the checkpoint's int8 graph (a torch run the first time)


def _onnx_cmd(work: Path) -> list[str]:
    return [sys.executable, "-m", "foldcnn", "predict", str(work / "model-int8.onnx"), "--input",
            str(work / "one.png"), "--out", str(work / "x.csv"), "--quiet"]


def _ckpt_cmd(work: Path) -> list[str]:
    return [sys.executable, "-m", "foldcnn", "predict", str(work / "ckpt"), "--backend", "ort", "--precision", "int8",
            "--input", str(work / "one.png"), "--out", str(work / "x.csv"), "--quiet"]


def _wall(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + system) of one run of ``cmd``. On a loaded machine the wall
    time includes waiting for a core; the CPU time is what the command itself needed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/foldcnn-startup", help="folder for the checkpoint, graph and PNG")
    ap.add_argument("--runs", type=int, default=7, help="interleaved rounds (median reported)")
    ap.add_argument("--images", type=int, default=16384, help="images per throughput pass")
    ap.add_argument("--baseline-src", default=None, help="another foldcnn src/ tree to time the checkpoint command on")
    ap.add_argument("--baseline-label", default=None, help="what --baseline-src is (e.g. the commit it came from)")
    args = ap.parse_args()
    work = Path(args.work)
    prepare(work)
    cases = {"onnx_int8": (_onnx_cmd(work), _env(SRC)), "cached_checkpoint_int8": (_ckpt_cmd(work), _env(SRC))}
    if args.baseline_src:
        base_env = _env(Path(args.baseline_src))
        _sh(_ckpt_cmd(work), base_env)  # its own cache entry, built once, untimed
        cases["baseline_cached_checkpoint_int8"] = (_ckpt_cmd(work), base_env)
    walls: dict[str, list[float]] = {k: [] for k in cases}
    cpus: dict[str, list[float]] = {k: [] for k in cases}
    load_before = os.getloadavg()
    for _ in range(args.runs):
        for name, (cmd, env) in cases.items():
            wall, cpu_s = _wall(cmd, env)
            walls[name].append(wall)
            cpus[name].append(cpu_s)
    rates: dict[str, list[float]] = {"slim": [], "torch": []}
    cpu_rates: dict[str, list[float]] = {"slim": [], "torch": []}
    imported: dict[str, bool] = {}
    for r in range(args.runs):
        for mode in (("slim", "torch") if r % 2 == 0 else ("torch", "slim")):  # neither always goes first
            out = _sh([sys.executable, "-c", THROUGHPUT, mode, str(work), str(args.images), "5"], _env(SRC)).stdout
            rec = json.loads(out.strip().splitlines()[-1])
            rates[mode].append(rec["images_per_s"])
            cpu_rates[mode].append(rec["images_per_cpu_s"])
            imported[mode] = rec["torch_imported"]
    from foldcnn.results import write_result

    common = {"load_before": f"load average {load_before[0]:.1f} at the start of the run",
              "software": {"python": platform.python_version()},
              "baseline": {"src": args.baseline_src, "label": args.baseline_label} if args.baseline_src else None}
    labels = {"onnx_int8": "MODEL.onnx (int8) + sidecar", "cached_checkpoint_int8": "checkpoint, cached int8 graph",
              "baseline_cached_checkpoint_int8": f"checkpoint, cached int8 graph, {args.baseline_label or 'baseline'}"}
    rows = [{"case": labels[k], "command": " ".join(c), "median_wall_s": round(statistics.median(walls[k]), 3),
             "median_cpu_s": round(statistics.median(cpus[k]), 3), "wall_s": [round(x, 3) for x in walls[k]],
             "cpu_s": [round(x, 3) for x in cpus[k]], "runs": len(walls[k])} for k, (c, _) in cases.items()]
    base = next((r for r in rows if r["case"].startswith("checkpoint, cached int8 graph,")), None)
    for r in rows:
        r["wall_vs_baseline"] = round(r["median_wall_s"] / base["median_wall_s"], 3) if base else None
    first = write_result(
        ROOT / "results", "startup", where=None,
        description="Wall and CPU seconds of one foldcnn predict on one 22x52 PNG (fold-4 lol-gold-fraction, int8 "
                    "graph on onnxruntime), a fresh process each, medians of interleaved runs",
        columns=[{"title": "model given", "cell": "{case}"}, {"title": "median wall", "cell": "{median_wall_s:.2f} s"},
                 {"title": "median CPU (user+sys)", "cell": "{median_cpu_s:.2f} s"},
                 {"title": "wall vs before", "cell": "{wall_vs_baseline:.2f}x"}],
        rows=rows, setup={"runs": args.runs, "target_s": 0.5}, **common)
    thr = {k: statistics.median(v) for k, v in rates.items()}
    cthr = {k: statistics.median(v) for k, v in cpu_rates.items()}
    trows = [{"path": {"slim": "exported graph, no torch imported", "torch": "model built in torch"}[k],
              "median_images_per_s": round(thr[k], 1), "images_per_s": [round(x, 1) for x in rates[k]],
              "vs_torch_path": round(thr[k] / thr["torch"], 4),
              "median_images_per_cpu_s": round(cthr[k], 1), "images_per_cpu_s": [round(x, 1) for x in cpu_rates[k]],
              "cpu_vs_torch_path": round(cthr[k] / cthr["torch"], 4), "torch_imported": imported[k]} for k in rates]
    second = write_result(
        ROOT / "results", "slim-throughput", where=None,
        description="Predictor.predict_arrays throughput of one int8 graph on onnxruntime (1 thread, batch 1024, "
                    f"{args.images} uint8 22x52 images), run from an exported graph without torch and from the "
                    "model built in torch, alternating processes (5 passes each), median of the per-process "
                    "medians; per wall second and per CPU second of the process (the engine runs in the calling "
                    "thread, so CPU time is less disturbed by other jobs on the machine)",
        columns=[{"title": "path", "cell": "{path}"}, {"title": "images/s", "cell": "{median_images_per_s:,.0f}"},
                 {"title": "vs torch path", "cell": "{vs_torch_path:.3f}x"},
                 {"title": "images per CPU second", "cell": "{median_images_per_cpu_s:,.0f}"},
                 {"title": "vs torch path (CPU)", "cell": "{cpu_vs_torch_path:.3f}x"}],
        rows=trows, setup={"runs": args.runs, "images": args.images}, **common)
    print(json.dumps({"startup": {r["case"]: (r["median_wall_s"], r["median_cpu_s"]) for r in rows},
                      "throughput": {r["path"]: (r["median_images_per_s"], r["median_images_per_cpu_s"])
                                     for r in trows}}, indent=2))
    print(f"wrote {first} and {second}")


if __name__ == "__main__":
    main()
