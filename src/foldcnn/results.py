"""A published measurement as data: one JSON file under results/, named by what, where and commit.

A script that regenerates a number of the docs ends with :func:`write_result`; the file records the
command, date, CPU, commit and load beside the table's rows, and ``docs/render.py`` renders the docs'
tables from it (results/README.md describes the fields).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what the platform says where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(cwd: str | Path = ".") -> str:
    """The short commit of ``cwd``'s checkout, with ``-dirty`` when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def this_run(cwd: str | Path = ".") -> dict:
    """Where and when a measurement runs: date, UTC time, CPU, cores, commit and load average."""
    now = datetime.datetime.now(datetime.timezone.utc)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    cores = os.cpu_count()
    return {"date": now.strftime("%Y-%m-%d"), "time_utc": now.strftime("%H:%M"), "cpu": f"{cpu_model()}, {cores} cores",
            "commit": git_commit(cwd),
            "load": f"load average {load[0]:.1f} at the end of the run" if load else "load not measured"}


def slug(text: str) -> str:
    """``Vendor CPU 9000 (R)`` -> ``vendor-cpu-9000-r``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_result(directory: str | Path, what: str, *, description: str, columns: list[dict], rows: list[dict],
                 where: str | None = None, command: str | None = None, **fields) -> Path:
    """Write ``directory/WHAT_WHERE_COMMIT.json`` and return its path.

    ``columns``: ``{"title": ..., "cell": "{field:.2f}x"}`` templates formatted with each row;
    ``command`` defaults to this process's command line; ``where`` to the CPU's first two words;
    ``fields`` (setup, software, ...) are stored as given."""
    run = this_run()
    for c in columns:
        for name in re.findall(r"{(\w+)", c["cell"]):
            if not any(name in r for r in rows):
                raise ValueError(f"column {c['title']!r} names {name!r}, which no row has")
    short = " ".join(cpu_model().replace(",", " ").split()[:2])  # the vendor and family words
    where = where or slug(short)
    doc = {"what": description, "command": command or " ".join(sys.argv), **run,
           "machine": f"{short}, {os.cpu_count()} cores", **fields,
           "provenance": "written by the command above", "columns": columns, "rows": rows}
    path = Path(directory) / f"{slug(what)}_{where}_{run['commit']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
