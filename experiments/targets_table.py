"""The CPU targets table of docs/benchmarks.md, from one `foldcnn bench` JSON file.

    foldcnn bench --preset cpu-targets --json runs/bench/cpu.json
    python experiments/targets_table.py runs/bench/cpu.json

For every game CNN and precision: the original (f=1) on its best path (the fastest engine at its
best batch size) and the folded model on its best path, each with its fraction of the measured
peak of its own runtime and precision, the folded model's fraction of the highest peak measured
for that precision on any runtime (fp32: torch's or ONNX Runtime's, whichever was faster), the
ratio, and whether the issue's target holds (fp32: folded >= 85% of the precision's highest peak
and faster than the original; bf16 and int8: >= 2.0x). The paper's
scaled baseline is listed when the run has it; it is a peer, not the original, so the targets do
not use it. Prints markdown.
"""

from __future__ import annotations

import argparse

from foldcnn.bench.report import read_json
from foldcnn.bench.tables import peer_summary

ENGINE = {"ort": "ORT", "compile": "compile", "eager": "eager", "cuda-graphs": "CUDA graphs", "tensorrt": "TensorRT"}


def path_cell(r: dict) -> str:
    peak = "" if r.get("fraction_of_peak") is None else f" ({100 * r['fraction_of_peak']:.0f}%)"
    return f"{r['images_per_s']:,.0f}{peak}, {ENGINE.get(r['backend'], r['backend'])} B={r['batch_size']}"


def highest_peaks(peaks) -> dict[tuple[str, str], float]:
    """(device, dtype) -> the highest peak FLOP/s measured for it on any runtime."""
    out: dict[tuple[str, str], float] = {}
    for p in peaks.peaks if peaks else []:
        out[(p.device, p.dtype)] = max(out.get((p.device, p.dtype), 0.0), p.flops_per_s)
    return out


def verdict(dtype: str, strict_fraction: float | None, ratio: float) -> str:
    if dtype == "fp32":
        ok = ratio > 1.0 and strict_fraction is not None and strict_fraction >= 0.85
        return "met" if ok else "not met"
    return "met" if ratio >= 2.0 else "not met"


def rows(records: list[dict], peaks=None) -> list[list[str]]:
    highest = highest_peaks(peaks)
    out = []
    for g in peer_summary(records):
        if not g["original"] or g["folded"] is None:
            continue
        original = max(g["original"].values(), key=lambda r: r["images_per_s"])
        folded = g["folded"]
        ratio = folded["images_per_s"] / original["images_per_s"]
        top = highest.get((folded.get("device", "cpu"), g["dtype"]))
        strict = folded["flops_per_s"] / top if top else None
        base = g["baseline"]
        out.append([g["task"], g["dtype"], path_cell(original), f"f={folded['fold']}: {path_cell(folded)}",
                    "-" if strict is None else f"{100 * strict:.0f}%",
                    f"**{ratio:.2f}x**", verdict(g["dtype"], strict, ratio),
                    "-" if base is None else path_cell(base)])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", help="a foldcnn bench --json file")
    a = p.parse_args()
    data = read_json(a.json)
    headers = ["model", "precision", "original, best path: images/s (of peak)", "folded, best path",
               "folded, of the precision's highest peak", "folded / original", "target", "scaled baseline, best"]
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    order = {"fp32": 0, "int8": 1, "bf16": 2, "fp16": 3}
    for row in sorted(rows(data["records"], data.get("peaks")), key=lambda r: (order.get(r[1], 9), r[0])):
        print("| " + " | ".join(row) + " |")
    print()
    peaks = data.get("peaks")
    for peak in peaks.peaks if peaks else []:
        print(f"- peak {peak.runtime} {peak.dtype}: {peak.flops_per_s / 1e9:,.0f} GFLOP/s ({peak.what})")
    for bw in peaks.bandwidths if peaks else []:
        print(f"- copy bandwidth: {bw.bytes_per_s / 1e9:,.1f} GB/s ({bw.what})")


if __name__ == "__main__":
    main()
