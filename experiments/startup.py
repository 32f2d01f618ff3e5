"""Start-up and throughput of the torch-free inference path, written to results/runtime/.

    python experiments/startup.py --work /tmp/startup --runs 7 [--baseline-src /path/to/other/src]

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
Writes results/runtime/startup-<cpu>.json (command, date, cpu, commit, load, every run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
best = []
for _ in range(reps):
    t0 = time.perf_counter(); p.predict_arrays(x); best.append(n / (time.perf_counter() - t0))
print(json.dumps({"images_per_s": sorted(best)[len(best) // 2], "torch_imported": "torch" in sys.modules}))
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


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        sha = _sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], dict(os.environ)).stdout.strip()
        dirty = _sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], dict(os.environ)).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/foldcnn-startup", help="folder for the checkpoint, graph and PNG")
    ap.add_argument("--runs", type=int, default=7, help="interleaved rounds (median reported)")
    ap.add_argument("--images", type=int, default=16384, help="images per throughput pass")
    ap.add_argument("--baseline-src", default=None, help="another foldcnn src/ tree to time the checkpoint command on")
    ap.add_argument("--baseline-label", default=None, help="what --baseline-src is (e.g. the commit it came from)")
    ap.add_argument("--out", default=None, help="JSON path (default results/runtime/startup-<cpu>.json)")
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
    imported: dict[str, bool] = {}
    for _ in range(args.runs):
        for mode in rates:
            out = _sh([sys.executable, "-c", THROUGHPUT, mode, str(work), str(args.images), "3"], _env(SRC)).stdout
            rec = json.loads(out.strip().splitlines()[-1])
            rates[mode].append(rec["images_per_s"])
            imported[mode] = rec["torch_imported"]
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in walls.items()}
    thr = {k: statistics.median(v) for k, v in rates.items()}
    cpu = _cpu()
    record = {
        "command": "python experiments/startup.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu, "usable_cores": len(os.sched_getaffinity(0)), "commit": _commit(),
        "load_average_1_5_15": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in load_after]},
        "note": "shared machine: other jobs ran beside these timings",
        "python": platform.python_version(),
        "baseline": {"src": args.baseline_src, "label": args.baseline_label} if args.baseline_src else None,
        "startup": {"timed_commands": {k: " ".join(c) for k, (c, _) in cases.items()},
                    "median_wall_s": {k: round(v, 3) for k, v in med.items()},
                    "wall_s": {k: [round(x, 3) for x in v] for k, v in walls.items()},
                    "median_cpu_s": {k: round(statistics.median(v), 3) for k, v in cpus.items()},
                    "cpu_s": {k: [round(x, 3) for x in v] for k, v in cpus.items()}, "target_s": 0.5},
        "throughput": {"what": "Predictor.predict_arrays, int8 graph on onnxruntime, 1 thread, batch 1024, "
                               f"{args.images} uint8 22x52 images, median of 3 passes per process",
                       "median_images_per_s": {k: round(v, 1) for k, v in thr.items()},
                       "images_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
                       "slim_over_torch": round(thr["slim"] / thr["torch"], 4),
                       "torch_imported": imported},
    }
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")[:40]
    out = Path(args.out) if args.out else ROOT / "results" / "runtime" / f"startup-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({"median_wall_s": record["startup"]["median_wall_s"],
                      "median_cpu_s": record["startup"]["median_cpu_s"], "throughput": thr,
                      "slim_over_torch": record["throughput"]["slim_over_torch"]}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
