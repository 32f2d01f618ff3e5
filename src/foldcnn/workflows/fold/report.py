"""report.md of `foldcnn fold`: the tables, the choice and the commands that use the chosen model."""

from __future__ import annotations

__all__ = ["render_report"]


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
