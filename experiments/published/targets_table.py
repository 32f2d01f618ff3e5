"""The CPU targets table of docs/benchmarks.md, from one `foldcnn bench` JSON file.

    foldcnn bench --preset cpu-targets --json runs/bench/cpu.json
    python experiments/published/precision_agreement.py --checkpoints runs/accuracy --json runs/agreement.json
    python experiments/published/targets_table.py runs/bench/cpu.json --agreement runs/agreement.json

For every game CNN and precision: the original (f=1) on its best engine (the fastest engine at
its best batch size, on any engine) and the folded model on its best engine, each with its
fraction of the precision's roof (the highest rate measured for that precision in the run: any
engine's matmul peak, or a model that ran faster), the ratio, and whether the target holds:
folded >= 1.5x the original, and for bf16 and int8 predictions that agree with fp32
on >= 99% of images on trained checkpoints (``--agreement``, from
experiments/published/precision_agreement.py; without it the row says the agreement is unchecked).

Then the headline per model: the fastest folded configuration overall against the fastest
original configuration overall, over every engine and every precision allowed (fp32, and each
lower precision whose agreement is >= 99% for that model). The paper's scaled baseline is listed
when the run has it; it is a peer, not the original, so the targets do not use it. Prints
markdown, headed by the CPU model the run measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from foldcnn.bench.report import read_json
from foldcnn.bench.tables import config_cell, headline, peer_summary

ENGINE = {"ort": "ORT", "openvino": "OpenVINO", "compile": "compile", "eager": "eager", "cuda-graphs": "CUDA graphs",
          "tensorrt": "TensorRT"}
TARGET = 1.5  # folded / original, each on its best engine (the project's target)
MIN_AGREEMENT = 0.99


def path_cell(r: dict) -> str:
    peak = "" if r.get("fraction_of_peak") is None else f" ({100 * r['fraction_of_peak']:.0f}%)"
    return f"{r['images_per_s']:,.0f}{peak}, {ENGINE.get(r['backend'], r['backend'])} B={r['batch_size']}"


def read_agreement(path: str | None) -> dict[tuple[str, str], float] | None:
    """(task, precision) -> the lowest agreement with fp32 over the folds and engines measured."""
    if path is None:
        return None
    out: dict[tuple[str, str], float] = {}
    for row in json.loads(Path(path).read_text())["rows"]:
        key = (row["task"], row["precision"])
        out[key] = min(out.get(key, 1.0), row["agreement"])
    return out


def allowed_precisions(records: list[dict], agreement: dict | None) -> dict[str, set[str]] | None:
    """task -> precisions the headline may use (fp32, and lower ones agreeing >= 99%); None: all."""
    if agreement is None:
        return None
    out: dict[str, set[str]] = {}
    for r in records:
        task = r["model"].removesuffix("-scaled")
        if r["precision"] == "fp32" or agreement.get((task, r["precision"]), 0.0) >= MIN_AGREEMENT:
            out.setdefault(task, set()).add(r["precision"])
    return out


def verdict(precision: str, ratio: float, task: str, agreement: dict | None) -> str:
    if ratio < TARGET:
        return "not met"
    if precision == "fp32":
        return "met"
    if agreement is None or (task, precision) not in agreement:
        return "met (agreement unchecked)"
    agree = agreement[(task, precision)]
    return "met" if agree >= MIN_AGREEMENT else f"not met (agreement {100 * agree:.2f}%)"


def rows(records: list[dict], agreement: dict | None = None) -> list[list[str]]:
    out = []
    for g in peer_summary(records):
        if not g["original"] or g["folded"] is None:
            continue
        original, folded, ratio = g["best_original"], g["folded"], g["gain_vs_original"]
        base = g["baseline"]
        agree = "-" if agreement is None or g["precision"] == "fp32" else (
            f"{100 * agreement[(g['task'], g['precision'])]:.2f}%" if (g["task"], g["precision"]) in agreement else "unchecked")
        out.append([g["task"], g["precision"], path_cell(original), f"f={folded['fold']}: {path_cell(folded)}",
                    f"**{ratio:.2f}x**", agree, verdict(g["precision"], ratio, g["task"], agreement),
                    "-" if base is None else path_cell(base)])
    return out


def headline_rows(records: list[dict], agreement: dict | None = None) -> list[list[str]]:
    return [[g["task"], config_cell(g["original"]), config_cell(g["folded"]), f"**{g['gain']:.2f}x**",
             "met" if g["gain"] >= TARGET else "not met"]
            for g in headline(records, allowed_precisions(records, agreement))]


def table(headers: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers), *("| " + " | ".join(r) + " |" for r in body)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", help="a foldcnn bench --json file")
    p.add_argument("--agreement", help="JSON from experiments/published/precision_agreement.py --json (trained checkpoints)")
    a = p.parse_args()
    data = read_json(a.json)
    agreement = read_agreement(a.agreement)
    machine = data.get("machine") or {}
    print(f"CPU: {machine.get('cpu_model', 'unknown')}, {machine.get('usable_cores', '?')} usable cores; "
          f"onnxruntime {machine.get('onnxruntime')}, openvino {machine.get('openvino')}, torch {machine.get('torch')}\n")
    order = {"fp32": 0, "int8": 1, "bf16": 2, "fp16": 3}
    body = sorted(rows(data["records"], agreement), key=lambda r: (order.get(r[1], 9), r[0]))
    print("\n".join(table(["model", "precision", "original, best engine: images/s (of roof)", "folded, best engine",
                           "folded / original", "agreement with fp32", f"target >= {TARGET}x", "scaled baseline, best"],
                          body)))
    scope = ("fp32 and every lower precision with >= 99% agreement" if agreement is not None
             else "every precision measured; agreement unchecked")
    print(f"\nHeadline: fastest folded vs fastest original configuration, any engine ({scope}):\n")
    print("\n".join(table(["model", "fastest original", "fastest folded", "gain", f"target >= {TARGET}x"],
                          headline_rows(data["records"], agreement))))
    print()
    peaks = data.get("peaks")
    for peak in peaks.peaks if peaks else []:
        print(f"- peak {peak.runtime} {peak.precision}: {peak.flops_per_s / 1e9:,.0f} GFLOP/s ({peak.what})")
    roofs = {(r["device"], r["precision"]): r for r in data["records"] if r.get("roof")}
    for (_, precision), r in roofs.items():
        print(f"- roof {precision}: {r['peak_flops_per_s'] / 1e9:,.0f} GFLOP/s ({r['roof']})")
    for bw in peaks.bandwidths if peaks else []:
        print(f"- copy bandwidth: {bw.bytes_per_s / 1e9:,.1f} GB/s ({bw.what})")


if __name__ == "__main__":
    main()
