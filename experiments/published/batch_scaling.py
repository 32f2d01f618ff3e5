"""How two `foldcnn bench` runs differ at large batches: each engine's rate at a large batch
against its rate at a small one, and folded / original at the same batch size.

    FOLDCNN_KEEP_MEMORY=0 foldcnn bench --preset cpu-targets --json runs/bench/mem-off.json
    foldcnn bench --preset cpu-targets --json runs/bench/mem-on.json
    python experiments/published/batch_scaling.py runs/bench/mem-off.json runs/bench/mem-on.json

Written for the glibc page-fault fix (foldcnn.memory); the two runs are separate, so the
ratios within each run are what compare, not absolute images/s. Game CNNs only (no scaled
baselines). Prints markdown.
"""

from __future__ import annotations

import argparse
import statistics

from foldcnn.bench.report import read_json


def rates(path: str) -> dict[tuple, float]:
    return {(r["model"], r["fold"], r["backend"], r["precision"], r["batch_size"]): r["images_per_s"]
            for r in read_json(path)["records"] if not r["model"].endswith("-scaled")}


def engines(runs: list[dict]) -> list[tuple[str, str]]:
    seen = {k[2:4] for run in runs for k in run}
    order = ["eager", "compile", "ort", "cuda-graphs", "tensorrt"]
    return sorted(seen, key=lambda e: (order.index(e[0]) if e[0] in order else 9, e[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", help="foldcnn bench --json of the first run")
    p.add_argument("after", help="foldcnn bench --json of the second run")
    p.add_argument("--small", type=int, default=256, help="the small batch (images)")
    p.add_argument("--large", type=int, default=4096, help="the large batch (images)")
    p.add_argument("--fold", type=int, default=4)
    a = p.parse_args()
    runs = [rates(a.before), rates(a.after)]
    print(f"| engine | fold | rate at {a.large} / rate at {a.small}, before | after |")
    print("|---|---|---|---|")
    for eng in engines(runs):
        for fold in (1, a.fold):
            cells = []
            for run in runs:
                vals = [run[k] / run[(*k[:4], a.small)] for k in run
                        if k[2:4] == eng and k[1] == fold and k[4] == a.large and (*k[:4], a.small) in run]
                cells.append(f"{statistics.median(vals):.2f}" if vals else "-")
            print(f"| {eng[0]} {eng[1]} | {fold} | " + " | ".join(cells) + " |")
    print()
    sizes = sorted({k[4] for run in runs for k in run})
    print(f"| engine | batch | f={a.fold} / f=1, before (min-max over models) | after |")
    print("|---|---|---|---|")
    for eng in engines(runs):
        for size in sizes:
            cells = []
            for run in runs:
                vals = [run[k] / run[(k[0], 1, *k[2:])] for k in run
                        if k[2:4] == eng and k[1] == a.fold and k[4] == size and (k[0], 1, *k[2:]) in run]
                cells.append(f"{min(vals):.2f}-{max(vals):.2f}" if vals else "-")
            print(f"| {eng[0]} {eng[1]} | {size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
