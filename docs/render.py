"""Render the docs' tables from the measurements in results/.

    python docs/render.py            # rewrite every table between markers in README.md and docs/*.md
    python docs/render.py --check    # exit 1, naming each stale table, without writing

A table is written between two markers, in README.md or any docs/*.md:

    <!-- results: results/best-vs-best_game-cnns_amd-epyc_18eca2f.json precision=int8 -->
    ... (rendered here; edits are overwritten) ...
    <!-- /results -->

The first word after ``results:`` is a results file (JSON with ``columns`` and ``rows``, see
results/README.md) or the name of a view below that joins several files; ``key=v1,v2`` keeps the
rows whose field ``key`` is one of the values, ``columns=0,1,4`` keeps those columns. Under the
table a line names the measurement: date, CPU, commit, and the file.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
MARKER = re.compile(r"(<!-- results: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /results -->)", re.DOTALL)


def load(name: str) -> dict:
    """One results file by its path relative to the repository root."""
    return json.loads((ROOT / name).read_text(encoding="utf-8"))


def cell(template: str, row: dict) -> str:
    """``template`` formatted with ``row``; empty when a field it names is missing or null."""
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    if any(row.get(f) is None for f in fields):
        return ""
    return template.format_map(row)


def markdown_table(titles: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def source_line(docs: list[tuple[str, dict]]) -> str:
    """``Measured 2026-12-07 on AMD EPYC ..., commit 18eca2f (results/x.json).`` per file."""
    parts = [f"{d['date']} on {d['machine']}, commit {d['commit']}, {d['load']} ([{name}](/{name}))" for name, d in docs]
    return "Measured " + "; ".join(parts) + "."


def render_file(name: str, filters: dict[str, list[str]], columns: list[int] | None) -> str:
    doc = load(name)
    cols = doc["columns"] if columns is None else [doc["columns"][i] for i in columns]
    rows = [r for r in doc["rows"] if all(str(r.get(k)) in v for k, v in filters.items())]
    if not rows:
        raise SystemExit(f"{name}: no row matches {filters}")
    table = markdown_table([c["title"] for c in cols], [[cell(c["cell"], r) for c in cols] for r in rows])
    return table + "\n\n" + source_line([(name, doc)])


def results_file(prefix: str) -> str:
    """The one file of results/ whose name starts with ``prefix``."""
    found = sorted(p.name for p in RESULTS.glob(prefix + "*.json"))
    if len(found) != 1:
        raise SystemExit(f"expected one results/{prefix}*.json, found {found}")
    return f"results/{found[0]}"


def view_summary() -> str:
    """The README's table: per game task, the default f=4 model's accuracy and fold-mate flip rate
    (current training code) beside the int8 best-engine gain of the quiet benchmark."""
    acc_name, speed_name = results_file("fold-mates-invariance_"), results_file("best-vs-best_")
    acc, speed = load(acc_name), load(speed_name)
    gain = {r["model"]: r for r in speed["rows"] if r["precision"] == "int8"}
    rows = []
    for r in acc["rows"]:
        if not r["training"].startswith("default widths"):
            continue
        g = gain[r["task"]]
        rows.append([r["task"], f"{r['original_top1_pct']:.2f}%", f"{r['test_top1_pct']:.2f}%",
                     f"{r['vs_original_points']:+.2f}", f"{r['flip_rate_pct']:.2f}%",
                     f"{g['original_images_per_s']:,}", f"{g['folded_images_per_s']:,}", f"**{g['ratio']:.2f}x**"])
    titles = ["task", "original top-1", "f=4 top-1", "f=4 vs original (points)", "f=4 flip rate",
              "original images/s", "f=4 images/s", "f=4 / original"]
    return markdown_table(titles, rows) + "\n\n" + source_line([(acc_name, acc), (speed_name, speed)])


VIEWS = {"summary": view_summary}


def render(spec: str) -> str:
    """The table (and its source line) for one marker's spec."""
    words = spec.split()
    filters, columns = {}, None
    for w in words[1:]:
        key, _, value = w.partition("=")
        if key == "columns":
            columns = [int(i) for i in value.split(",")]
        else:
            filters[key] = value.split(",")
    if words[0] in VIEWS:
        return VIEWS[words[0]]()
    return render_file(words[0], filters, columns)


def rendered(text: str) -> str:
    """``text`` with every marked table rendered afresh."""
    return MARKER.sub(lambda m: m[1] + render(m["spec"]) + "\n" + m[4], text)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def stale() -> list[str]:
    """The documents whose marked tables differ from what results/ renders."""
    return [str(p.relative_to(ROOT)) for p in documents() if rendered(p.read_text(encoding="utf-8")) != p.read_text(encoding="utf-8")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is stale; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        old = stale()
        for name in old:
            print(f"stale: {name} (run python docs/render.py)")
        return 1 if old else 0
    for p in documents():
        text = p.read_text(encoding="utf-8")
        new = rendered(text)
        if new != text:
            p.write_text(new, encoding="utf-8")
            print(f"rendered {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
