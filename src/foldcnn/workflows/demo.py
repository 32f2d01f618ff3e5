"""`foldcnn demo`: the whole story on generated data, in minutes on a laptop-class CPU.

Generates a game task, trains the original CNN and a folded one on the same images, measures
both accuracies and both throughputs side by side (interleaved trials, same run, peaks
measured), and writes ``report.md`` with plots. Library code: progress goes to a callback.
"""

from __future__ import annotations

import json
import platform
import shlex
import time
from dataclasses import Field, asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from foldcnn.bench.presets import Preset
from foldcnn.errors import UsageError
from foldcnn.options import option
from foldcnn.train.config import TrainConfig
from foldcnn.train.sources import DataSpec


# The demo's throughput sweep: a bench preset whose models and folds are the demo's task at fold 1
# and at its fold (``DemoConfig.sweep``); one batch size, also the end-to-end run's.
DEMO_BENCH = Preset("demo", "the demo's task, original and folded, on ONNX Runtime and OpenVINO fp32/int8 and "
                    "torch eager fp32", models=(), folds=(), batch_sizes=(1024,),
                    backends=(("ort", "fp32"), ("ort", "int8"), ("openvino", "fp32"), ("openvino", "int8"),
                              ("eager", "fp32")), trials=3, min_seconds=0.3)


def _no_cli(default_factory) -> Field:
    """A composed config: its own fields are the flags, not it."""
    return field(default_factory=default_factory, metadata={"cli": False})


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs, composed of the configs the commands it stands for take: the generated
    task (``data``, as ``foldcnn train --task``), the two training recipes (``original``, fold 1,
    and ``folded``, which distills from the original unless its ``distill`` is none), and the
    throughput sweep (``bench``, a ``foldcnn bench`` preset; its one batch size is also the
    end-to-end run's). The defaults fit minutes on a small CPU (results/demo-*.json): the folded CNN
    gets 200 epochs (at 100 it was still behind, docs/design.md, "Training recipe") and AdamW decay
    0.05; the early distillation check would add a quarter of its budget, so both skip it."""

    data: DataSpec = _no_cli(lambda: DataSpec(task="sot-coin-count"))
    fold: int = option(4, "fold of the folded model (>= 2)")
    original: TrainConfig = _no_cli(lambda: TrainConfig(epochs=30, distill_check=False))
    folded: TrainConfig = _no_cli(lambda: TrainConfig(epochs=200, weight_decay=0.05, distill="kl",
                                                      distill_check=False))
    bench: Preset = _no_cli(lambda: DEMO_BENCH)

    def __post_init__(self):
        for name, cls in (("data", DataSpec), ("original", TrainConfig), ("folded", TrainConfig), ("bench", Preset)):
            if not isinstance(getattr(self, name), cls):
                raise UsageError(f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if self.fold < 2:
            raise UsageError(f"the demo compares a folded model with the original: fold must be >= 2, got {self.fold}")
        if self.data.task is None:
            raise UsageError("the demo generates a game task: data needs a task (DataSpec(task=...))")
        if self.original.distill != "none":
            raise UsageError(f"the original has no teacher: original.distill must be none, got {self.original.distill!r}")
        if min(self.original.weight_decay, self.folded.weight_decay) < 0:
            raise UsageError("weight_decay must be >= 0")
        if len(self.bench.batch_sizes) != 1 or self.bench.baselines:
            raise UsageError("the demo times one batch size and no baselines: bench needs one batch_sizes entry "
                             "and no baselines")

    @classmethod
    def quick(cls) -> DemoConfig:
        """A tiny run (under a minute) that checks the set-up: ``foldcnn demo --quick``."""
        d = cls()
        return cls(data=replace(d.data, train_size=600, val_size=200, test_size=400),
                   original=replace(d.original, epochs=2), folded=replace(d.folded, epochs=2),
                   bench=replace(d.bench, batch_sizes=(256,), backends=(("eager", "fp32"),), trials=1,
                                 min_seconds=0.05))

    @property
    def task(self) -> str:
        return self.data.task

    @property
    def batch_size(self) -> int:
        """Images per call, in the throughput sweep and end to end."""
        return self.bench.batch_sizes[0]

    @property
    def sweep(self) -> Preset:
        """``bench`` with the demo's models and folds: its task at fold 1 and at ``fold``."""
        return replace(self.bench, models=(self.task,), folds=(1, self.fold))


@dataclass
class DemoResult:
    accuracy: dict = field(default_factory=dict)  # fold -> summary of run_training
    throughput: list[dict] = field(default_factory=list)  # bench records
    end_to_end: dict = field(default_factory=dict)  # fold -> `foldcnn predict` on the test PNGs
    peaks: dict = field(default_factory=dict)
    seconds: float = 0.0
    report: Path | None = None


def _train_command(cfg: DemoConfig, fold: int, train: TrainConfig, out: Path, teacher: Path | None) -> list[str]:
    """The ``foldcnn train`` command that reproduces one of the demo's runs."""
    d = cfg.data
    command = ["foldcnn", "train", "--task", d.task, "--fold", str(fold), "--epochs", str(train.epochs),
               "--train-size", str(d.train_size), "--val-size", str(d.val_size), "--test-size", str(d.test_size),
               "--data-seed", str(d.seed), "--seed", str(train.seed), "--out", str(out)]
    if teacher is not None:
        command += ["--teacher", str(teacher), "--distill", train.distill, "--no-distill-check"]
    if fold > 1 or train.weight_decay != TrainConfig.weight_decay:  # train's default decay is by fold
        command += ["--weight-decay", f"{train.weight_decay:g}"]
    return command


def _train(cfg: DemoConfig, fold: int, train: TrainConfig, out: Path, progress: bool,
           teacher: Path | None = None) -> dict:
    from foldcnn.train.run import ModelSpec, RunOptions, run_training

    command = _train_command(cfg, fold, train, out, teacher)
    run = run_training(ModelSpec(cfg.task, fold=fold), cfg.data, train,
                       RunOptions(out, teacher=teacher, quiet=not progress, command=tuple(command)))
    return {**run["summary"], "command": shlex.join(command)}


def _throughput(cfg: DemoConfig, progress: bool) -> tuple[list[dict], dict]:
    from foldcnn.bench import build_records, preset_configs, preset_peaks, run_sweep

    sweep, configs = preset_configs(cfg.sweep)
    outcome = run_sweep(configs, trials=sweep.trials, min_seconds=sweep.min_seconds, progress=progress)
    peaks = preset_peaks(sweep, configs)
    records = build_records(outcome.results, peaks)
    return records, {"peaks": peaks, "skipped": [(str(c), why) for c, why in outcome.skipped]}


def run_demo(out_dir: str | Path = "foldcnn-demo", cfg: DemoConfig | None = None, *, progress: bool = True,
             on_stage: Callable[[str], None] | None = None) -> DemoResult:
    """Train the original and the folded CNN, time both, write ``out_dir/report.md``."""
    cfg = cfg or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = on_stage or (lambda _msg: None)
    t0 = time.perf_counter()
    result = DemoResult()
    say(f"1/4 training the original {cfg.task} CNN (fold 1, {cfg.original.epochs} epochs, "
        f"{cfg.data.train_size} generated images)")
    result.accuracy[1] = _train(cfg, 1, cfg.original, out / "original", progress)
    distill = cfg.folded.distill
    say(f"2/4 training the folded CNN (fold {cfg.fold}, {cfg.folded.epochs} epochs, same images"
        + (f", distilling from the original ({distill})" if distill != "none" else "") + ")")
    teacher = out / "original" / "checkpoint" if distill != "none" else None
    result.accuracy[cfg.fold] = _train(cfg, cfg.fold, cfg.folded, out / f"folded-f{cfg.fold}", progress,
                                       teacher)
    say(f"3/4 measuring throughput at batch {cfg.batch_size} images: "
        + ", ".join(f"{b}/{d}" for b, d in cfg.bench.backends))
    records, extra = _throughput(cfg, progress)
    result.throughput = records
    peaks = extra["peaks"]
    result.peaks = peaks.to_dict()
    say(f"4/4 end to end: foldcnn predict on {cfg.data.test_size} test PNGs, original and folded")
    result.end_to_end = _end_to_end(cfg, out)
    plots = _plots(cfg, result, out)
    result.seconds = time.perf_counter() - t0
    result.report = write_report(out, cfg, result, plots, extra["skipped"])
    (out / "demo.json").write_text(json.dumps({
        "config": asdict(cfg), "accuracy": result.accuracy, "throughput": records,
        "end_to_end": result.end_to_end, "seconds": result.seconds}, indent=2, default=str))
    return result


def _end_to_end(cfg: DemoConfig, out: Path) -> dict:
    """Both checkpoints through what ``foldcnn predict`` runs (decoding, batching, engine, CSV rows)
    on the test split written as PNGs; engine start-up excluded (one warm-up call first)."""
    from foldcnn.data.game_export import write_game_text
    from foldcnn.infer import PredictionWriter, Predictor

    pngs = out / "test-pngs"
    write_game_text(cfg.task, str(pngs), {"test": cfg.data.test_size}, cfg.data.seed, overwrite=True)
    backend, precision = cfg.bench.backends[0]
    rows = {}
    for fold, folder in ((1, "original"), (cfg.fold, f"folded-f{cfg.fold}")):
        ck = out / folder / "checkpoint"
        with Predictor.from_checkpoint(ck, backend=backend, precision=precision, batch_size=cfg.batch_size) as p:
            p.predict(next(iter(sorted((pngs / "test").rglob("*.png")))))
            with PredictionWriter(out / folder / "test-predictions.csv") as w:
                p.predict_to(w, pngs / "test")
            rows[fold] = {"images_per_s": p.stats.images_per_s, "images": p.stats.images, "backend": backend,
                          "precision": precision, "stages": p.stats.stages(),
                          "command": f"foldcnn predict {ck} --input {pngs / 'test'} --out "
                                     f"{out / folder / 'test-predictions.csv'} --backend {backend} "
                                     f"--precision {precision} --batch-size {cfg.batch_size}"}
    return rows


def _plots(cfg: DemoConfig, result: DemoResult, out: Path) -> list[Path]:
    """Two pictures that tell the story: images/s per engine and precision, original vs folded,
    model only and end to end (grouped bars); the two models' validation top-1 per epoch."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is optional: the report says how to get the plots
        return []
    from foldcnn.train.loop import read_metrics

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    groups = [(f"{r['backend']} {r['precision']}\nmodel only", r["original_images_per_s"], r["folded_images_per_s"])
              for r in comparison_rows(cfg, result)]
    e = result.end_to_end
    if 1 in e and cfg.fold in e:
        groups.append((f"{e[1]['backend']} {e[1]['precision']}\nend to end (PNGs)", e[1]["images_per_s"],
                       e[cfg.fold]["images_per_s"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 1), 4))
    xs = list(range(len(groups)))
    for shift, label, k in ((-0.2, "original (f=1)", 1), (0.2, f"folded (f={cfg.fold})", 2)):
        bars = ax.bar([x + shift for x in xs], [g[k] for g in groups], width=0.4, label=label)
        ax.bar_label(bars, labels=[f"{g[k]:,.0f}" for g in groups], fontsize=7)
    ax.set_xticks(xs, [g[0] for g in groups], fontsize=8)
    bars_path = _finish_plot(plt, fig, ax, folder / "images_per_s.png", f"{cfg.task}: images/s, batch {cfg.batch_size}",
                             "images/s")
    fig, ax = plt.subplots(figsize=(6, 4))
    for fold, folder_name in ((1, "original"), (cfg.fold, f"folded-f{cfg.fold}")):
        rows = read_metrics(out / folder_name)
        if rows:
            ax.plot([r["epoch"] for r in rows], [100 * r["val_top1"] for r in rows], marker="." if len(rows) < 30
                    else None, label=f"{'original' if fold == 1 else 'folded'} (f={fold})")
    ax.set_xlabel("epoch")
    curves_path = _finish_plot(plt, fig, ax, folder / "validation_top1.png",
                               f"{cfg.task}: validation accuracy while training", "validation top-1 (%)")
    return [bars_path, curves_path]


def _finish_plot(plt, fig, ax, path: Path, title: str, ylabel: str) -> Path:
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def comparison_rows(cfg: DemoConfig, result: DemoResult) -> list[dict]:
    """One row per (backend, precision): original vs folded images/s and their ratio."""
    rows = []
    by_key = {(r["backend"], r["precision"], r["fold"]): r for r in result.throughput}
    for backend, precision in cfg.bench.backends:
        a, b = by_key.get((backend, precision, 1)), by_key.get((backend, precision, cfg.fold))
        if a is None or b is None:
            continue
        rows.append({"backend": backend, "precision": precision, "original_images_per_s": a["images_per_s"],
                     "folded_images_per_s": b["images_per_s"], "ratio": b["images_per_s"] / a["images_per_s"],
                     "original_fraction_of_peak": a["fraction_of_peak"],
                     "folded_fraction_of_peak": b["fraction_of_peak"]})
    return rows


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def format_summary(cfg: DemoConfig, result: DemoResult) -> str:
    """The comparison as a markdown table (also printed by the CLI)."""
    a, b = result.accuracy[1], result.accuracy[cfg.fold]
    lines = [f"| | original (f=1) | folded (f={cfg.fold}) |", "|---|---|---|",
             f"| test top-1 | {100 * a['test_top1']:.1f}% | {100 * b['test_top1']:.1f}% |",
             f"| training time | {a['train_seconds']:.0f} s | {b['train_seconds']:.0f} s |"]
    if b.get("test_flip_rate") is not None:  # foldcnn train --regroupings: answers that depend on fold-mates
        lines.append(f"| test images whose class changes with their fold-mates (10 regroupings) | 0% (not folded) | "
                     f"{100 * b['test_flip_rate']:.1f}% (top-1 spread {100 * b['test_top1_spread']:.1f} points) |")
    for r in comparison_rows(cfg, result):
        lines.append(f"| images/s, {r['backend']} {r['precision']} (batch {cfg.batch_size}) | "
                     f"{r['original_images_per_s']:,.0f} ({_pct(r['original_fraction_of_peak'])} of peak) | "
                     f"{r['folded_images_per_s']:,.0f} ({_pct(r['folded_fraction_of_peak'])} of peak), "
                     f"**{r['ratio']:.2f}x** |")
    e = result.end_to_end
    if 1 in e and cfg.fold in e:
        a_e, b_e = e[1], e[cfg.fold]
        lines.append(f"| images/s end to end, `foldcnn predict` on the test PNGs ({a_e['backend']} "
                     f"{a_e['precision']}) | {a_e['images_per_s']:,.0f} | {b_e['images_per_s']:,.0f}, "
                     f"**{b_e['images_per_s'] / a_e['images_per_s']:.2f}x** |")
    best = fastest_rows(result)
    if best is not None:
        a, b = best
        lines.append(f"| fastest of the rows above | {a['images_per_s']:,.0f} ({a['backend']} {a['precision']}) | "
                     f"{b['images_per_s']:,.0f} ({b['backend']} {b['precision']}), "
                     f"**{b['images_per_s'] / a['images_per_s']:.2f}x** |")
    return "\n".join(lines)


def fastest_rows(result: DemoResult) -> tuple[dict, dict] | None:
    """(fastest original record, fastest folded record) over every engine and precision timed:
    the gain a user sees who runs each model on its own best engine."""
    original = [r for r in result.throughput if r["fold"] == 1]
    folded = [r for r in result.throughput if r["fold"] > 1]
    if not original or not folded:
        return None
    return max(original, key=lambda r: r["images_per_s"]), max(folded, key=lambda r: r["images_per_s"])


def write_report(out: Path, cfg: DemoConfig, result: DemoResult, plots: list[Path], skipped: list) -> Path:
    a, b = result.accuracy[1], result.accuracy[cfg.fold]
    gap = 100 * (b["test_top1"] - a["test_top1"])
    verdict = ("within 1 point of the original" if gap >= -1.0 else
               f"{-gap:.1f} points below the original: this budget is too short for the folded model "
               "(folded CNNs converge more slowly; see docs/accuracy.md)")
    text = [
        f"# foldcnn demo: {cfg.task}, original vs folded f={cfg.fold}", "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}. Total time {result.seconds / 60:.1f} min.", "",
        format_summary(cfg, result), "",
        f"Accuracy: the folded model is {verdict}. Both were trained on the same {cfg.data.train_size} "
        f"generated images and tested on the same {cfg.data.test_size}; the folded model for "
        f"{cfg.folded.epochs} epochs against the original's {cfg.original.epochs}, its fold slots tied while "
        f"training, with weight decay {cfg.folded.weight_decay:g}"
        + (f" and distilling from the original ({cfg.folded.distill})" if cfg.folded.distill != "none" else "")
        + " (docs/accuracy.md).", "",
        "Throughput counts every image of a folded input; the ratio compares the two models on the same "
        "runtime and precision, in one run with interleaved trials; the last row compares each model on its "
        "own fastest engine and precision (int8 changes a few predictions: experiments/published/precision_agreement.py "
        "counts them). "
        "Fraction of peak is against the roof of the precision: the fastest large matrix multiply measured in "
        "the same run on any runtime.", "",
        "## Reproduce", "",
        f"- original: `{a['command']}`", f"- folded: `{b['command']}`",
        f"- throughput: `foldcnn bench --models {cfg.task} --folds 1,{cfg.fold} --batch-sizes {cfg.batch_size} "
        f"--backends {','.join(f'{x}/{y}' for x, y in cfg.bench.backends)} --no-baselines --trials {cfg.bench.trials} "
        f"--min-seconds {cfg.bench.min_seconds:g}`",
        *(f"- end to end, f={f}: `{r['command']}` (the row times a warm Predictor: start-up excluded)"
          for f, r in result.end_to_end.items()), "",
    ]
    if skipped:
        text += ["## Skipped", ""] + [f"- {c}: {why}" for c, why in skipped] + [""]
    if plots:
        text += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    else:
        text += ["(no plots: `pip install 'foldcnn[plots]'` for matplotlib)"]
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n")
    return path
