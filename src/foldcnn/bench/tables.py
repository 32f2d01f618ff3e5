"""Readable text tables of benchmark records, peaks and the peer comparison (pure formatting)."""

from __future__ import annotations

from foldcnn.bench.peak import PeakSet
from foldcnn.bench.report import best_batches, is_original
from foldcnn.precision import precision_rank

__all__ = [
    "config_cell",
    "format_best",
    "format_headline",
    "format_peaks",
    "format_peers",
    "format_records",
    "format_skipped",
    "format_table",
    "headline",
    "peer_summary",
    "task_of",
]


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; first column left-aligned, the rest right-aligned."""
    cells = [headers, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _num(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _cm(r: dict) -> str:
    """The width rounding; a width multiplier other than the paper's sqrt(fold) is shown before it."""
    wm = r.get("width_mult")
    own = "" if wm is None or abs(wm - r["fold"] ** 0.5) < 1e-3 else f"w{wm:g} "
    if is_original(r):
        return "-"
    return own + ("default" if r["channel_multiple"] is None else str(r["channel_multiple"]))


def _spread(r: dict) -> str:
    """Range of the trials relative to the median: (max - min) / median."""
    return "-" if not r["images_per_s"] else f"{100 * (r['images_per_s_max'] - r['images_per_s_min']) / r['images_per_s']:.0f}%"


def format_records(records: list[dict]) -> str:
    """Every configuration: median images/s, trial range, GFLOP/s, AI, fraction of peak, ratio."""
    headers = ["model", "f", "width", "batch", "backend", "precision", "images/s", "range", "GFLOP/s", "AI",
               "of peak", "vs f=1", "best"]
    rows = [[r["model"], str(r["fold"]), _cm(r), str(r["batch_size"]), r["backend"],
             r["precision"] + ("" if r["device"] == "cpu" else f"@{r['device']}"), _num(r["images_per_s"]), _spread(r),
             _num(r["flops_per_s"] / 1e9, 1), _num(r["arithmetic_intensity"], 1), _pct(r["fraction_of_peak"]),
             _ratio(r["ratio_vs_original"]), "*" if r["best_batch"] else ""] for r in records]
    return format_table(headers, rows)


def format_best(records: list[dict]) -> str:
    """Best batch size per (model, fold, width, backend, precision) and the gain over fold=1 at its best."""
    headers = ["model", "f", "width", "backend", "precision", "best batch", "images/s", "of peak", "vs f=1 (best)"]
    rows = [[r["model"], str(r["fold"]), _cm(r), r["backend"], r["precision"], str(r["batch_size"]),
             _num(r["images_per_s"]), _pct(r["fraction_of_peak"]), _ratio(r["ratio_vs_original_best"])]
            for r in best_batches(records)]
    return format_table(headers, rows)


def task_of(model: str) -> str:
    """The task a model serves: ``<task>-scaled`` (the paper's baseline) serves ``<task>``."""
    return model.removesuffix("-scaled")


def peer_summary(records: list[dict]) -> list[dict]:
    """Per (task, precision, device): the original CNN (fold 1) on each backend at its best batch
    size, the paper's baseline (``<task>-scaled``) at its best, the best folded configuration,
    and ``gain`` = best folded / best of all the peers (originals and baseline), like for like
    in one precision."""
    best = [r for r in records if r["best_batch"]]
    groups: dict[tuple, dict] = {}
    for r in best:
        g = groups.setdefault((task_of(r["model"]), r["precision"], r["device"]),
                              {"task": task_of(r["model"]), "precision": r["precision"], "device": r["device"],
                               "original": {}, "baseline": None, "narrow": None, "folded": None})
        if r["family"] == "baseline":
            if r["fold"] == 1 and (g["baseline"] is None or r["images_per_s"] > g["baseline"]["images_per_s"]):
                g["baseline"] = r
        elif r["fold"] == 1 and not is_original(r):  # a narrower CNN: a peer like the baseline
            if g["narrow"] is None or r["images_per_s"] > g["narrow"]["images_per_s"]:
                g["narrow"] = r
        elif r["fold"] == 1:
            prev = g["original"].get(r["backend"])
            if prev is None or r["images_per_s"] > prev["images_per_s"]:
                g["original"][r["backend"]] = r
        elif g["folded"] is None or r["images_per_s"] > g["folded"]["images_per_s"]:
            g["folded"] = r
    out = []
    tasks = list(dict.fromkeys(k[0] for k in groups))
    for _, g in sorted(groups.items(), key=lambda kv: (tasks.index(kv[0][0]), precision_rank(kv[0][1]), kv[0][2])):
        peers = [*g["original"].values(), *([g["baseline"]] if g["baseline"] else []), *([g["narrow"]] if g["narrow"] else [])]
        top = max(peers, key=lambda r: r["images_per_s"]) if peers else None
        g["best_peer"] = top
        g["gain"] = g["folded"]["images_per_s"] / top["images_per_s"] if g["folded"] and top else None
        best_original = max(g["original"].values(), key=lambda r: r["images_per_s"]) if g["original"] else None
        g["best_original"] = best_original
        g["gain_vs_original"] = (g["folded"]["images_per_s"] / best_original["images_per_s"]
                                 if g["folded"] and best_original else None)
        out.append(g)
    return out


def headline(records: list[dict], precisions: dict[str, set[str]] | None = None) -> list[dict]:
    """Per (task, device): the fastest folded configuration overall against the fastest original
    (fold 1, not the baseline) configuration overall: any engine, batch size and precision.

    ``precisions`` maps a task to the precisions allowed for it (those whose predictions agree
    with fp32 on >= 99% of images on trained checkpoints); None allows every precision measured.
    Returns dicts with ``task``, ``device``, ``original``, ``folded`` (records) and ``gain``."""
    groups: dict[tuple, dict] = {}
    for r in records:
        if r["family"] == "baseline" or (r["fold"] == 1 and not is_original(r)):
            continue
        task = task_of(r["model"])
        if precisions is not None and r["precision"] not in precisions.get(task, ()):
            continue
        g = groups.setdefault((task, r["device"]), {"task": task, "device": r["device"], "original": None,
                                                    "folded": None})
        side = "original" if r["fold"] == 1 else "folded"
        if g[side] is None or r["images_per_s"] > g[side]["images_per_s"]:
            g[side] = r
    out = []
    for g in groups.values():
        if g["original"] and g["folded"]:
            g["gain"] = g["folded"]["images_per_s"] / g["original"]["images_per_s"]
            out.append(g)
    return out


def config_cell(r: dict) -> str:
    """``12,345 (f=4 openvino/int8 B=1024)``: images/s and the configuration that ran them."""
    return f"{r['images_per_s']:,.0f} (f={r['fold']} {r['backend']}/{r['precision']} B={r['batch_size']})"


def format_headline(records: list[dict], precisions: dict[str, set[str]] | None = None) -> str:
    """The headline table: fastest original vs fastest folded configuration per task."""
    rows = [[g["task"] + ("" if g["device"] == "cpu" else f"@{g['device']}"), config_cell(g["original"]),
             config_cell(g["folded"]), _ratio(g["gain"])] for g in headline(records, precisions)]
    return format_table(["task", "fastest original", "fastest folded", "gain"], rows)


def format_peers(records: list[dict]) -> str:
    """The peer table: originals per backend, baseline, best folded, gain over the best peer."""
    summary = peer_summary(records)
    backends = sorted({b for g in summary for b in g["original"]})

    def cell(r):
        return "-" if r is None else f"{r['images_per_s']:,.0f} (B={r['batch_size']})"

    headers = ["task", "precision", *[f"f=1 {b}" for b in backends], "baseline", "best folded", "vs best original",
               "vs best peer"]
    rows = []
    for g in summary:
        fo = g["folded"]
        folded = "-" if fo is None else f"{fo['images_per_s']:,.0f} (f={fo['fold']} {fo['backend']} B={fo['batch_size']})"
        base = g["baseline"]
        base_cell = "-" if base is None else f"{cell(base)} {base['backend']}"
        rows.append([g["task"], g["precision"] + ("" if g["device"] == "cpu" else f"@{g['device']}"),
                     *[cell(g["original"].get(b)) for b in backends], base_cell, folded,
                     _ratio(g["gain_vs_original"]), _ratio(g["gain"])])
    return format_table(headers, rows)


def format_peaks(peaks: PeakSet, records: list[dict] | None = None) -> str:
    """What was measured for the roofs, with the exact operation, and each precision's roof."""
    lines = [f"  peak {p.runtime}/{p.device}/{p.precision}: {p.flops_per_s / 1e9:,.1f} GFLOP/s  [{p.what}]"
             for p in peaks.peaks]
    roofs = {(r["device"], r["precision"]): r for r in records or [] if r.get("roof")}
    lines += [f"  roof {device}/{precision}: {r['peak_flops_per_s'] / 1e9:,.1f} GFLOP/s  [{r['roof']}]"
              for (device, precision), r in roofs.items()]
    lines += [f"  bandwidth {b.device}: {b.bytes_per_s / 1e9:,.1f} GB/s  [{b.what}]" for b in peaks.bandwidths]
    lines += [f"  not measured: {s}" for s in peaks.skipped]
    return "\n".join(lines) if lines else "  (no peaks measured)"


def format_skipped(skipped: list[tuple]) -> str:
    """One line per skipped configuration: its label and the reason."""
    return "\n".join(f"  {c.label()}: {why}" for c, why in skipped)
