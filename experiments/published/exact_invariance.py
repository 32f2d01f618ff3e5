"""Folded models whose answers depend on nothing but the image: docs/accuracy.md,
"Fold-mates: exact invariance". Runs on top of experiments/published/fold_mates_table.py's runs (its data
and its `foldcnn fold` originals and f=4 models in OUT/fold-TASK).

    python experiments/published/exact_invariance.py --out runs/t22 --jobs 2      # trains what is missing
    python experiments/published/exact_invariance.py --out runs/t22 --report      # the table only

Per task:

* ``OUT/pool-TASK``: the `foldcnn fold` f=4 run finished again from its own train_state.pt
  (``foldcnn train ... --resume`` on a copy), so its BatchNorm statistics are pooled over the fold
  slots as every tied training's are since commit 73d4092: the same weights, the baseline row;
* ``OUT/VARIANT-TASK``: the same f=4 training (data, teacher, budget) with one change each::

      foldcnn train --model TASK --data OUT/data/TASK --fold 4 --teacher OUT/fold-TASK/original/checkpoint \\
          --distill kl --threads 1 --out OUT/VARIANT-TASK  OPTIONS

* ``OUT/slot32-TASK`` (``--slots``): one slot of the ``cmxinf`` model, the half-width CNN of
  experiments/published/narrow_models.py, trained alone with the f=4 budget and the same distillation.

Finished runs (run.json present) are read, not retrained; ``--jobs`` runs that many at once (one
thread each).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FOLDCNN = [sys.executable, "-m", "foldcnn"]
DIAGONAL = ["--slot-diagonal-init"]
VARIANTS = {
    "xs1": ("`--cross-slot-decay 1`", ["--cross-slot-decay", "1", *DIAGONAL]),
    "xsinf": ("`--cross-slot-decay inf`", ["--cross-slot-decay", "inf", *DIAGONAL]),
    "cm32": ("`--channel-multiple 32`", ["--channel-multiple", "32"]),
    "cmxinf": ("**`--channel-multiple 32 --cross-slot-decay inf`**",
               ["--channel-multiple", "32", "--cross-slot-decay", "inf", *DIAGONAL]),
}
TASKS = ["apex-squad-count", "sot-coin-count", "lol-gold-fraction", "sot-timer", "lol-timer-minutes", "lol-gold-int"]
SLOT_TASKS = ["apex-squad-count", "sot-coin-count", "lol-gold-fraction", "sot-timer"]  # experiments/published/narrow_models.py


def run(cmd: list[str], log: Path) -> None:
    print("$ foldcnn", " ".join(cmd[len(FOLDCNN):]), flush=True)
    with log.open("w") as fh:
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT)


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _train_f4(out: Path, task: str, dest: Path, options: list[str], resume: bool = False) -> None:
    run([*FOLDCNN, "train", "--model", task, "--data", str(out / "data" / task), "--fold", "4",
         "--teacher", str(out / f"fold-{task}" / "original" / "checkpoint"), "--distill", "kl",
         "--threads", "1", "--quiet", "--out", str(dest), *options, *(["--resume"] if resume else [])],
        dest.with_name(dest.name + ".log"))


def pooled_baseline(out: Path, task: str) -> None:
    dest, src = out / f"pool-{task}", out / f"fold-{task}" / "fold4"
    if (dest / "run.json").is_file():
        return
    if not (src / "train_state.pt").is_file():
        raise SystemExit(f"{src} has no train_state.pt: run experiments/published/fold_mates_table.py --out {out} first")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ("train_state.pt", "teacher_logits.safetensors", "metrics.jsonl"):
        shutil.copy2(src / name, dest / name)
    _train_f4(out, task, dest, [], resume=True)


def variant(out: Path, task: str, name: str) -> None:
    dest = out / f"{name}-{task}"
    if not (dest / "run.json").is_file():
        _train_f4(out, task, dest, VARIANTS[name][1])


def slot_cnn(out: Path, task: str) -> None:
    dest = out / f"slot32-{task}"
    if not (dest / "run.json").is_file():
        run([*FOLDCNN, "train", "--model", f"experiments.published.narrow_models:slot32_{task.replace('-', '_')}",
             "--data", str(out / "data" / task), "--fold", "1", "--epochs", "200", "--weight-decay", "0.05",
             "--teacher", str(out / f"fold-{task}" / "original" / "checkpoint"), "--distill", "kl",
             "--threads", "1", "--quiet", "--out", str(dest)], dest.with_name(dest.name + ".log"))


def report(out: Path, tasks: list[str], names: list[str]) -> None:
    print("| task | f=4 training | test top-1 | vs original | vs `foldcnn fold` | flip rate | top-1 spread | train s |")
    print("|---|---|---|---|---|---|---|---|")
    met, missing = [], []
    for task in tasks:
        o, b = read(out / f"fold-{task}" / "original" / "run.json"), read(out / f"pool-{task}" / "run.json")
        if not (o and b):
            print(f"| {task} | (baseline not trained) |||||||")
            continue
        t1, tb = 100 * o["summary"]["test_top1"], 100 * b["summary"]["test_top1"]
        rows = [("default widths (`foldcnn fold`, statistics pooled)", b)]
        rows += [(VARIANTS[n][0], read(out / f"{n}-{task}" / "run.json")) for n in names]
        for label, r in rows:
            if r is None:
                missing.append(f"{task} {label}")
                continue
            s = r["summary"]
            t = 100 * s["test_top1"]
            print(f"| {task} | {label} | {t:.2f}% | {t - t1:+.2f} | {t - tb:+.2f} | {100 * s['test_flip_rate']:.2f}% | "
                  f"{100 * s['test_top1_spread']:.2f} pts | {s['train_seconds']:.0f} |")
            if r is not b and s["test_flip_rate"] <= 0.01 and tb - t <= 0.3:
                met.append(f"{task} ({label})")
    if missing:
        print(f"\nnot trained: {'; '.join(missing)}")
    print(f"\nflip rate <= 1% with <= 0.3 points lost against `foldcnn fold`: {len(set(m.split()[0] for m in met))} "
          f"task(s): {', '.join(met) or 'none'}")
    slots = [(t, read(out / f"slot32-{t}" / "run.json")) for t in tasks if t in SLOT_TASKS]
    if any(r for _, r in slots):
        print("\n| task | original | f=4 cmxinf | its slot CNN alone (f=1, 200 epochs, distilled) |\n|---|---|---|---|")
        for t, r in slots:
            o, c = read(out / f"fold-{t}" / "original" / "run.json"), read(out / f"cmxinf-{t}" / "run.json")

            def top1(x):
                return f"{100 * x['summary']['test_top1']:.2f}%" if x else "-"
            print(f"| {t} | {top1(o)} | {top1(c)} | {top1(r)} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/t22")
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--variants", default="xs1,xsinf,cm32,cmxinf",
                   help=f"comma-separated, of {', '.join(VARIANTS)} ('' = none)")
    p.add_argument("--slots", action="store_true", help="also train the cmxinf model's slot CNN alone")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--report", action="store_true", help="print the table of what is trained; train nothing")
    args = p.parse_args()
    out, names = Path(args.out), [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if not args.report:
        jobs = [(pooled_baseline, t) for t in args.tasks]
        jobs += [(lambda o, t, n=n: variant(o, t, n), t) for n in names for t in args.tasks]
        if args.slots:
            jobs += [(slot_cnn, t) for t in args.tasks if t in SLOT_TASKS]
        with ThreadPoolExecutor(args.jobs) as pool:
            for f in [pool.submit(fn, out, t) for fn, t in jobs]:
                f.result()
    report(out, args.tasks, names)


if __name__ == "__main__":
    main()
