"""PNG plots of a benchmark: throughput vs batch size (the paper's plateau figure) and rooflines.

matplotlib is imported inside the functions (optional dependency, ``pip install foldcnn[plots]``)
with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from foldcnn.bench.peak import PeakSet
from foldcnn.bench.tables import task_of
from foldcnn.errors import MissingExtraError

__all__ = ["plot_roofline", "plot_throughput", "write_plots"]

_MARKERS = "os^Dv<>p"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("plots need matplotlib: pip install 'foldcnn[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(*parts: str) -> str:
    return "_".join(p.replace("/", "-").replace(" ", "-") for p in parts)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fold_label(r: dict) -> str:
    """The series a record belongs to within its task's panel: a fold (and width), or the
    paper's scaled baseline."""
    if r.get("family") == "baseline":
        return "scaled baseline"
    if r["fold"] == 1:
        wm = r.get("width_mult")
        return "f=1 (original)" if wm in (None, 1.0) else f"f=1 (width x{wm:g})"
    return f"f={r['fold']}" + ("" if r["channel_multiple"] is None else f" (width x{r['channel_multiple']})")


def _panel(r: dict, models: set[str]) -> str:
    """The task a record is drawn with: the paper's baseline ``<task>-scaled`` joins ``<task>``'s
    panel (and colour) when the run has that task, so each peer sits next to what it competes with."""
    task = task_of(r["model"])
    return task if r.get("family") == "baseline" and task in models else r["model"]


def _series_markers(labels) -> dict[str, str]:
    return {label: _MARKERS[i % len(_MARKERS)] for i, label in enumerate(dict.fromkeys(labels))}


def plot_throughput(records: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """One PNG per (backend, precision, device): a panel per model, images/s (median, min-max bars)
    against batch size in images, one line per fold; the scaled baseline joins its task's panel."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key in dict.fromkeys((r["backend"], r["precision"], r["device"]) for r in records):
        rows = [r for r in records if (r["backend"], r["precision"], r["device"]) == key]
        names = {r["model"] for r in rows}
        models = list(dict.fromkeys(_panel(r, names) for r in rows))
        markers = _series_markers(_fold_label(r) for r in rows)
        ncols = min(3, len(models))
        nrows = math.ceil(len(models) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.4 * nrows), squeeze=False)
        for ax, model in zip(axes.flat, models):
            mine = [r for r in rows if _panel(r, names) == model]
            for label in dict.fromkeys(_fold_label(r) for r in mine):
                line = sorted((r for r in mine if _fold_label(r) == label), key=lambda r: r["batch_size"])
                xs = [r["batch_size"] for r in line]
                ys = [r["images_per_s"] for r in line]
                err = [[y - r["images_per_s_min"] for y, r in zip(ys, line)],
                       [r["images_per_s_max"] - y for y, r in zip(ys, line)]]
                ax.errorbar(xs, ys, yerr=err, marker=markers[label], capsize=2, label=label)
            ax.set_xscale("log", base=2)
            ax.set_ylim(bottom=0)  # the plateau reads right only from zero
            ax.set_title(model, fontsize=10)
            ax.set_xlabel("batch size (images)")
            ax.set_ylabel("images/s")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(models):]:
            ax.set_visible(False)
        fig.suptitle(f"throughput vs batch size: {key[0]} {key[1]} on {key[2]} (median of trials, min-max bars)")
        paths.append(_save(plt, fig, out_dir / f"throughput_{_slug(*key)}.png"))
    return paths


def plot_roofline(records: list[dict], peaks: PeakSet, out_dir: str | os.PathLike) -> list[Path]:
    """One log-log PNG per (backend, precision, device) whose peak and bandwidth were measured:
    attainable FLOP/s = min(peak, AI x bandwidth) and every (model, fold) at its best batch size
    placed at (arithmetic intensity, measured FLOP/s)."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key in dict.fromkeys((r["backend"], r["runtime"], r["precision"], r["device"]) for r in records):
        backend, runtime, precision, device = key
        peak, bw = peaks.flops_per_s(runtime, device, precision), peaks.bytes_per_s(device)
        rows = [r for r in records if (r["backend"], r["runtime"], r["precision"], r["device"]) == key and r["best_batch"]]
        if not peak or not bw or not rows:
            continue
        ais = [r["arithmetic_intensity"] for r in rows]
        lo, hi = min(ais + [peak / bw]) / 4, max(ais + [peak / bw]) * 4
        xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        fig, ax = plt.subplots(figsize=(8.5, 4.5))
        ax.plot(xs, [min(peak, x * bw) for x in xs], color="black",
                label=f"roof: {runtime} {precision} peak {peak / 1e9:,.0f} GFLOP/s, {bw / 1e9:,.1f} GB/s copy")
        names = {r["model"] for r in rows}
        models = list(dict.fromkeys(_panel(r, names) for r in rows))
        markers = _series_markers(_fold_label(r) for r in rows)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for r in rows:
            ax.scatter(r["arithmetic_intensity"], r["flops_per_s"],
                       color=colors[models.index(_panel(r, names)) % len(colors)],
                       marker=markers[_fold_label(r)], zorder=3)
        for m in models:  # legend entries: colour = task, marker = fold or baseline
            ax.scatter([], [], color=colors[models.index(m) % len(colors)], marker="o", label=m)
        for label, marker in markers.items():
            ax.scatter([], [], color="gray", marker=marker, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"arithmetic intensity (FLOPs/byte, {precision})")
        ax.set_ylabel("FLOP/s")
        ax.set_title(f"roofline: {backend} {precision} on {device} (best batch size per model and fold)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        paths.append(_save(plt, fig, out_dir / f"roofline_{_slug(backend, precision, device)}.png"))
    return paths


def write_plots(records: list[dict], peaks: PeakSet, out_dir: str | os.PathLike) -> list[Path]:
    """Every plot of a benchmark into ``out_dir``; returns the PNG paths."""
    return plot_throughput(records, out_dir) + plot_roofline(records, peaks, out_dir)
