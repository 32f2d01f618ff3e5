""".venv/bin/python experiments/published/bench_game_text.py -> 22x52: ~9,900 images/CPU-s (6,600 wall, shared machine); smaller crops 14,472-16,027/CPU-s

Synthetic game text generation speed on one core (~1 min; --grids docs/images also writes the
sample sheets). Full table of that run in docs/data.md (Speed).

One process, one thread (torch.set_num_threads(1), BLAS/OpenMP pinned to 1), images made in
memory with foldcnn.data.game_text.game_text_arrays: warm-up first (the glyph cache is filled
once per process, timed separately as "cold"), then TRIALS trials of N images per task,
interleaved across tasks, median reported. The last row times the disk path (generate + PNG
encode + write, one worker) for one task. --grids DIR also writes the 8x4 sample sheets used
in docs/data.md.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from foldcnn.data.game_export import game_text_grid, write_game_text  # noqa: E402
from foldcnn.data.game_tasks import game_task, list_game_tasks  # noqa: E402
from foldcnn.data.game_text import game_text_arrays  # noqa: E402

N = 8192
TRIALS = 5
WRITE_TASK, WRITE_N = "lol-gold-fraction", 4096


def main() -> None:
    ap = argparse.ArgumentParser(description="synthetic game text generation speed, one core")
    ap.add_argument("--n", type=int, default=N, help="images per trial")
    ap.add_argument("--trials", type=int, default=TRIALS)
    ap.add_argument("--grids", metavar="DIR", help="also write <task>.png sample sheets here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tasks = list_game_tasks()

    cold = {}
    for task in tasks:  # first call per task: glyph rendering and size fitting included
        t0 = time.perf_counter()
        game_text_arrays(task, 1024, seed=12345)
        cold[task] = time.perf_counter() - t0
    rates: dict[str, list[float]] = {t: [] for t in tasks}
    cpu_rates: dict[str, list[float]] = {t: [] for t in tasks}
    for trial in range(args.trials):
        for task in tasks:
            t0, c0 = time.perf_counter(), time.process_time()
            game_text_arrays(task, args.n, seed=trial)
            rates[task].append(args.n / (time.perf_counter() - t0))
            cpu_rates[task].append(args.n / (time.process_time() - c0))

    # images per CPU-second is the per-core rate even when another process shares the core
    print(f"{'task':18} {'H x W':>7} {'images_per_s':>12} {'min':>8} {'max':>8} "
          f"{'images_per_cpu_s':>16} {'cold_s':>7}")
    for task in tasks:
        h, w = game_task(task).size
        r = rates[task]
        print(f"{task:18} {f'{h}x{w}':>7} {statistics.median(r):>12,.0f} {min(r):>8,.0f} "
              f"{max(r):>8,.0f} {statistics.median(cpu_rates[task]):>16,.0f} {cold[task]:>7.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_game_text(WRITE_TASK, tmp, {"train": WRITE_N}, seed=0)
        dt = time.perf_counter() - t0
    print(f"{WRITE_TASK} to PNG files (1 worker): {WRITE_N / dt:,.0f} images_per_s")

    if args.grids:
        os.makedirs(args.grids, exist_ok=True)
        for task in tasks:
            path = os.path.join(args.grids, f"game-{task}.png")
            game_text_grid(task, rows=4, cols=8, seed=0, scale=3).save(path, optimize=True)
            print("wrote", path)


if __name__ == "__main__":
    main()
