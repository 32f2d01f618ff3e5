"""report.md of `foldcnn fold`: the tables, the choice and the commands that use the chosen model."""

from __future__ import annotations

from foldcnn.train.metrics import WEAK_MIN_IMAGES, WEAK_POINTS

__all__ = ["render_report", "render_search_report", "write_frontier"]


def agreement_lines(rows: list[tuple[str, dict]]) -> list[str]:
    """One line per model whose lower-precision engine was checked against fp32 on the validation images."""
    out = []
    for label, row in rows:
        checks = [c for c in row.get("agreement_checks") or [] if not c["engine"].endswith("/fp32")]
        if not checks:
            continue
        said = ", ".join(f"{c['engine']} {c['agreement']:.2%}" for c in checks)
        out.append(f"- {label}: agreement with fp32 on the validation images: {said}; timed on {row['engine']}.")
    if out:
        out.insert(0, "\nA lower precision counts only where it gives fp32's class to at least 99% of the validation "
                   "images:")
    return out


def weak_class_lines(rows: list[tuple[str, dict]]) -> list[str]:
    """One line per model with classes read far worse than its top-1 (train.metrics.weak_classes)."""
    out = []
    for label, row in rows:
        weak = row.get("weak_classes") or []
        if weak:
            said = ", ".join(f"`{w['class']}` {w['top1']:.1%} of {w['images']}" for w in weak)
            out.append(f"- {label}: {said}.")
    if out:
        out.insert(0, f"\nClasses read at least {WEAK_POINTS:g} points below the model's test top-1 (test images "
                   f"of the class, classes with {WEAK_MIN_IMAGES} or more): top-1 averages over classes and hides "
                   "them; more training images of these classes is the remedy to try.")
    return out


def render_report(r: dict) -> str:
    """report.md: the tables and the commands that predict and serve with the chosen model."""
    o, c = r["original"], r["chosen"]
    lines = [f"# foldcnn fold: {r['model']}", "", f"Command: `{' '.join(r['command'])}`", "",
             f"Test split: {r['test_images']} images (seeded split, recorded in the stage run.json files). "
             f"Throughput: medians of interleaved trials on this machine, each model at its best engine and batch.",
             "", "| model | test top-1 | drop (points) | images/s | engine | batch | gain |",
             "|---|---|---|---|---|---|---|",
             f"| original (fold 1) | {o['top1']:.2%} | - | {o['images_per_s']:,.0f} | {o['engine']} | "
             f"{o['batch_size']} | 1.00x |"]
    for f in r["folded"]:
        lines.append(f"| fold {f['fold']} | {f['top1']:.2%} | {f['top1_drop_points']:.2f} | {f['images_per_s']:,.0f} | "
                     f"{f['engine']} | {f['batch_size']} | {f['gain']:.2f}x |")
    for f in r["folded"]:
        check, more = f.get("distill_check"), f.get("still_improving") or {}
        for decision in (check, (check or {}).get("final")):
            if decision and not decision["kept"]:
                lines.append(f"\nFold {f['fold']}: {decision['reason']}.")
        if more.get("yes"):
            lines.append(f"\nFold {f['fold']} was still improving at its last epoch "
                         f"(+{more['val_top1_gain_points']:g} points of val top-1 over {more['over_epochs']} epochs).")
    lines += weak_class_lines([("original", o), *[(f"fold {f['fold']}", f) for f in r["folded"]]])
    lines += agreement_lines([("original", o), *[(f"fold {f['fold']}", f) for f in r["folded"]]])
    peer = r.get("best_narrower_peer")
    if peer:
        lines += ["", f"Best narrower peer: the original at width x{peer['width_mult']:.3g} (fold 1) runs "
                  f"{peer['images_per_s']:,.0f} images/s here ({peer['engine']}), {peer['gain']:.2f}x the original, "
                  "timed with random weights and not trained in this run; `foldcnn fold --search` trains it "
                  "beside the folded models and chooses between them."]
    onnx = c.get("onnx_int8") or c["onnx"]
    best = o if c["fold"] == 1 else next(f for f in r["folded"] if f["fold"] == c["fold"])
    engine = f"--backend {best['backend']} --precision {best['precision']}"
    if best["backend"] not in _SERVING_BACKENDS:  # an engine predict/serve do not take (yet): their default
        engine = f"--backend auto  # fastest here was {best['engine']}"
    lines += ["", f"**Chosen: fold {c['fold']}** ({c['gain']:.2f}x). {c['reason']}.", "",
              "Use it:", "", "```",
              f"foldcnn predict {c['checkpoint']} --input IMAGES_DIR --out predictions.csv {engine}",
              f"foldcnn predict {c['checkpoint']} --input IMAGES_DIR --out predictions/ --engine ray",
              f"foldcnn serve {c['checkpoint']} {engine}",
              f"foldcnn eval {c['checkpoint']} --data CLASS_FOLDERS",
              "```", "", f"ONNX: `{onnx}` (with its sidecar `{onnx}.json`), runnable with plain onnxruntime."]
    return "\n".join(lines) + "\n"


# Engines `foldcnn predict` and `foldcnn serve` take by name (cli/predict.py, cli/serve.py).
_SERVING_BACKENDS = ("eager", "compile", "ort", "cuda-graphs")


def write_frontier(r: dict, path) -> str | None:
    """frontier.png: validation top-1 against images/s (log x) of every candidate, the original, the
    paper's point and the narrower CNNs marked, the budget as a line; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = r["candidates"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"original": ("k", "*", "original"), "paper": ("tab:red", "s", "paper's point (f, sqrt f)"),
              "narrower": ("tab:green", "v", "narrower CNN (f=1)"), "folded": ("tab:blue", "o", "folded"),
              "wider": ("tab:gray", "^", "wider CNN (f=1)")}
    seen = set()
    for row in rows:
        if row["val_top1"] is None:
            continue
        color, marker, label = styles[row["kind"]]
        face = "none" if row["status"] == "abandoned" else color
        ax.scatter(row["images_per_s"], 100 * row["val_top1"], c=face, edgecolors=color, marker=marker, s=70,
                   label=None if label in seen else label, zorder=3)
        seen.add(label)
        ax.annotate(row["name"] + (" (chosen)" if row["status"] == "chosen" else
                                   " (abandoned)" if row["status"] == "abandoned" else ""),
                    (row["images_per_s"], 100 * row["val_top1"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.axhline(100 * r["budget_val_top1"], color="tab:orange", ls="--",
               label=f"budget: original - {r['max_accuracy_drop']:g} points")
    untrained = [row for row in rows if row["status"] == "untrained"]
    for row in untrained:
        ax.axvline(row["images_per_s"], color="0.8", lw=0.8, zorder=1)
    if untrained:
        ax.plot([], [], color="0.8", label="untrained (timed only)")
    ax.set_xscale("log")
    ax.set_xlabel("images/s on this machine (best engine and batch, random weights)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"foldcnn fold --search: {r['model']}")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2%}"


def render_search_report(r: dict) -> str:
    """report.md of a search: the verdict, the frontier, every candidate, the cost and how to use the choice."""
    c, cost = r["chosen"], r["cost"]
    lines = [f"# foldcnn fold --search: {r['model']}", "", f"Command: `{' '.join(r['command'])}`", "",
             f"**{r['verdict'][0].upper() + r['verdict'][1:]}.**", ""]
    if r.get("frontier_png"):
        lines += ["![frontier: validation top-1 against images/s](frontier.png)", ""]
    lines += [f"Budget: validation top-1 >= {r['budget_val_top1']:.2%} (the original's minus "
              f"{r['max_accuracy_drop']:g} points). Candidates were timed with random weights in one interleaved "
              "sweep on this machine (each at its best engine, precision and batch), then trained fastest first; "
              "selection read validation only. Test top-1 is each trained model's, on "
              f"{r['test_images']} test images, for this report. Images/s marked * (the original, the chosen model, "
              "the paper's points, the fastest narrower CNN) come from a second interleaved sweep with more trials; "
              "their ratios are the ones the verdict states. The others are the first sweep's, which only ordered "
              "the training.", "",
              "| candidate | kind | fold | width | images/s | gain | engine | val top-1 | test top-1 | flip rate "
              "| epochs | status |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["candidates"]:
        lines.append(f"| {row['name']} | {row['kind']} | {row['fold']} | {row['width_mult']:.3g} | "
                     f"{row['images_per_s']:,.0f}{'*' if row.get('confirmed') else ''} | {row['gain']:.2f}x | {row['engine']} | {_pct(row['val_top1'])} | "
                     f"{_pct(row['test_top1'])} | {_pct(row['flip_rate'])} | {row['epochs_trained']} | {row['status']} |")
    abandoned = [row for row in r["candidates"] if row.get("reason")]
    if abandoned:
        lines.append("")
    lines += [f"- {row['name']} abandoned: {row['reason']}." for row in abandoned]
    lines += weak_class_lines([(row["name"], row) for row in r["candidates"]])
    lines += agreement_lines([(row["name"], row) for row in r["candidates"]])
    lines += ["", f"Cost: {cost['seconds']:,.0f} s in this invocation, {cost['train_seconds']:,.0f} s of training "
              f"in all; {cost['trained']} candidates trained to the full budget, {cost['abandoned']} abandoned, "
              f"{cost['untrained']} untrained."]
    if cost.get("f4_train_seconds"):
        lines[-1] += f" One f=4 training took {cost['f4_train_seconds']:,.0f} s here."
    elif cost.get("f4_train_seconds_estimated"):
        lines[-1] += (f" One f=4 training would take about {cost['f4_train_seconds_estimated']:,.0f} s here (its "
                      "budget at the abandoned f=4 candidates' seconds per epoch).")
    onnx = c.get("onnx_int8") or c["onnx"]
    lines += ["", f"**Chosen: {c['name']}** (fold {c['fold']}, width x{c['width_mult']:.3g}), {c['gain']:.2f}x the "
              f"original on {c['engine']}, test top-1 {_pct(c['top1'])}.", "", "Use it:", "", "```",
              f"foldcnn predict {c['checkpoint']} --input IMAGES_DIR --out predictions.csv",
              f"foldcnn serve {c['checkpoint']}", f"foldcnn eval {c['checkpoint']} --data CLASS_FOLDERS", "```", "",
              f"ONNX: `{onnx}` (with its sidecar `{onnx}.json`), runnable with plain onnxruntime."]
    return "\n".join(lines) + "\n"
