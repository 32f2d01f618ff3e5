"""Disk size of the slim install (foldcnn[runtime]: no torch) against the install that predicts with
torch (torch + foldcnn[export]), each in a fresh virtual environment; written to results/
(docs/runtime.md).

    python experiments/published/install_size.py --work /tmp/foldcnn-venvs

Each venv gets ``pip install <this tree>[extras]`` (torch==2.13.0 first for the torch one, the CPU
wheel, as the README installs it); the sizes are ``du`` of the whole venv and of its site-packages,
and the slim venv is checked to hold no torch. A container image adds its base image to the slim
venv's size (python:3.12-slim, for the Dockerfile of ``foldcnn serve``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INSTALLS = {"slim": (None, "runtime"), "slim_serve": (None, "runtime,serve"), "torch": ("torch==2.13.0", "export")}


def _du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/foldcnn-venvs")
    args = ap.parse_args()
    work = Path(args.work)
    venvs = {}
    for name, (first, extra) in INSTALLS.items():
        venv = work / name
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        if first:
            subprocess.run(pip + [first], check=True)
        subprocess.run(pip + [f"{ROOT}[{extra}]"], check=True)
        site = next((venv / "lib").glob("python3*/site-packages"))
        has_torch = (site / "torch").exists()
        packages = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
                                  capture_output=True, text=True, check=True).stdout
        venvs[name] = {"install": (f"pip install {first} && " if first else "") + f"pip install '.[{extra}]'",
                       "venv_bytes": _du(venv), "site_packages_bytes": _du(site), "has_torch": has_torch,
                       "packages": {p["name"]: p["version"] for p in json.loads(packages)}}
    from foldcnn.results import write_result

    mib = 2 ** 20
    rows = [{"install": v["install"], "venv_mib": round(v["venv_bytes"] / mib, 1), "has_torch": v["has_torch"],
             "vs_torch_install": round(v["venv_bytes"] / venvs["torch"]["venv_bytes"], 3), **v}
            for v in venvs.values()]
    path = write_result(
        ROOT / "results", "install-size",
        description="Disk size of a fresh virtual environment (du -sb) per install of this tree: the slim one "
                    "(foldcnn[runtime], and with [serve]) against the one that predicts with torch",
        columns=[{"title": "install", "cell": "{install}"}, {"title": "size", "cell": "{venv_mib:,.0f} MiB"},
                 {"title": "torch in it", "cell": "{has_torch}"}, {"title": "vs the torch install",
                                                                    "cell": "{vs_torch_install:.2f}x"}],
        rows=rows, software={"python": sys.version.split()[0]},
        load_note="pip installs from a local package index; sizes do not depend on the load")
    print(json.dumps({r["install"]: r["venv_mib"] for r in rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
