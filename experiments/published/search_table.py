"""The `foldcnn fold --search` runs on the game tasks as one table: per task, the chosen model
against the original (validation decides, test reported once), the paper's point and the best
narrower CNN beside it, and what the search cost against one f=4 training on the same data.

    python experiments/published/fold_search.py TASK --data data/TASK --out runs/search-TASK \\
        --name TASK-8000 --threads 1 --max-accuracy-drop 0.5          # per task; results/search/TASK-8000.json
    python experiments/published/search_table.py apex-squad-count sot-timer ... \\
        [--f4-run TASK=runs/fold-TASK/fold4 ...]    # a separate f=4 training of the same data, for the cost ratio
    python experiments/published/search_table.py my-cnn-apex-squad-count my-cnn-sot-coin-count --suffix -3500 \
        --name search_my-cnn-class-folders --description "..."    # another set of runs, its own results file

Without ``--f4-run`` a task's f=4 seconds are the search's own: its f=4 candidate's training when one
trained to the end, else the f=4 budget at the abandoned f=4 candidates' seconds per epoch (narrower
than the paper's point, so an underestimate of one f=4 training).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from foldcnn.results import write_result  # noqa: E402


def f4_seconds(stage: Path) -> float:
    """Seconds one f=4 training took: its epochs and, where it ran, its distillation check's twin."""
    seconds = 0.0
    for path in (stage / "metrics.jsonl", stage / "distill_check" / "metrics.jsonl"):
        if path.is_file():
            seconds += sum(json.loads(line)["epoch_seconds"] for line in path.read_text().splitlines() if line.strip())
    return seconds


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _peer(row: dict | None) -> str:
    if row is None:
        return "-"
    acc = "" if row["val_top1"] is None else f", val {_pct(row['val_top1'])}, test {_pct(row['test_top1'])}"
    return f"{row['name']}: {row['gain']:.2f}x, {row['status']}{acc}"


def row_of(task: str, r: dict, f4: float | None) -> dict:
    rows = r["candidates"]
    o, chosen = rows[0], next(x for x in rows if x["status"] == "chosen")
    paper = next((x for x in rows if x["kind"] == "paper" and x["fold"] == 4), None)
    narrow = [x for x in rows if x["kind"] == "narrower"]
    peer = max(narrow, key=lambda x: (x["status"] in ("meets", "chosen"), x["images_per_s"])) if narrow else None
    cost = r["cost"]
    f4 = f4 or cost.get("f4_train_seconds") or cost.get("f4_train_seconds_estimated")
    return {"task": task, "original_test": _pct(o["test_top1"]), "chosen": chosen["name"], "gain": chosen["gain"],
            "engine": chosen["engine"], "chosen_val": _pct(chosen["val_top1"]), "budget": _pct(r["budget_val_top1"]),
            "chosen_test": _pct(chosen["test_top1"]),
            "test_points": round(100 * (chosen["test_top1"] - o["test_top1"]), 2),
            "paper": _peer(paper), "narrower": _peer(peer), "seconds": cost["seconds"],
            "trained": cost["trained"], "abandoned": cost["abandoned"], "untrained": cost["untrained"],
            "f4_seconds": round(f4, 1) if f4 else None, "cost_ratio": round(cost["seconds"] / f4, 2) if f4 else None,
            "commit": r["commit"], "load": f"{r['load_average_before'][0]} / {r['load_average_after'][0]}"}


COLUMNS = [{"title": "task", "cell": "{task}"}, {"title": "original test top-1", "cell": "{original_test}"},
           {"title": "chosen", "cell": "{chosen}"}, {"title": "gain (engine)", "cell": "{gain:.2f}x ({engine})"},
           {"title": "chosen val top-1 (budget)", "cell": "{chosen_val} ({budget})"},
           {"title": "chosen test top-1", "cell": "{chosen_test}"},
           {"title": "test vs original (points)", "cell": "{test_points:+.2f}"},
           {"title": "paper's f=4 point", "cell": "{paper}"}, {"title": "best narrower CNN", "cell": "{narrower}"},
           {"title": "search s", "cell": "{seconds:,.0f}"},
           {"title": "trained / abandoned / untrained", "cell": "{trained} / {abandoned} / {untrained}"},
           {"title": "one f=4 training s", "cell": "{f4_seconds:,.0f}"}, {"title": "cost / f=4", "cell": "{cost_ratio:.2f}x"},
           {"title": "commit, load before / after", "cell": "{commit}, {load}"}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tasks", nargs="+")
    ap.add_argument("--results", default=str(ROOT / "results" / "search"), help="where fold_search.py wrote TASK-8000.json")
    ap.add_argument("--suffix", default="-8000")
    ap.add_argument("--f4-run", action="append", default=[], help="TASK=STAGE_DIR of a separate f=4 training")
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--name", default="search_game-tasks", help="the results file's name (before _CPU_COMMIT.json)")
    ap.add_argument("--description", default="foldcnn fold --search on the game tasks at the accuracy table's sizes "
                    "(8,000 training, 1,000 validation, 4,000 test images), --max-accuracy-drop 0.5")
    args = ap.parse_args()
    f4 = {k: f4_seconds(Path(v)) for k, v in (s.split("=", 1) for s in args.f4_run)}
    rows = [row_of(t, json.loads((Path(args.results) / f"{t}{args.suffix}.json").read_text()), f4.get(t))
            for t in args.tasks]
    path = write_result(Path(args.out), args.name, description=args.description, columns=COLUMNS, rows=rows,
                        f4_runs={k: v for k, v in (s.split("=", 1) for s in args.f4_run)})
    print(path)


if __name__ == "__main__":
    main()
