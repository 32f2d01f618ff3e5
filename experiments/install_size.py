"""Disk size of the slim install (foldcnn[runtime]: no torch) against the install that predicts with
torch (torch + foldcnn[export]), each in a fresh virtual environment; written to results/runtime/.

    python experiments/install_size.py --work /tmp/foldcnn-venvs

Each venv gets ``pip install <this tree>[extras]`` (torch==2.13.0 first for the torch one, the CPU
wheel, as the README installs it); the sizes are ``du`` of the whole venv and of its site-packages,
and the slim venv is checked to hold no torch. A container image adds its base image to the slim
venv's size (python:3.12-slim, for the Dockerfile of ``foldcnn serve``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import ROOT, _commit, _cpu  # noqa: E402

INSTALLS = {"slim": (None, "runtime"), "slim_serve": (None, "runtime,serve"), "torch": ("torch==2.13.0", "export")}


def _du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/foldcnn-venvs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(args.work)
    record = {"command": "python experiments/install_size.py " + " ".join(sys.argv[1:]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "cpu": _cpu(), "commit": _commit(), "python": sys.version.split()[0], "venvs": {}}
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
        record["venvs"][name] = {"install": (f"pip install {first} && " if first else "") + f"pip install '.[{extra}]'",
                                 "venv_bytes": _du(venv), "site_packages_bytes": _du(site), "has_torch": has_torch,
                                 "packages": {p["name"]: p["version"] for p in json.loads(packages)}}
    v = record["venvs"]
    record["slim_over_torch_venv"] = round(v["slim"]["venv_bytes"] / v["torch"]["venv_bytes"], 4)
    slug = re.sub(r"[^a-z0-9]+", "-", record["cpu"].lower()).strip("-")[:40]
    out = Path(args.out) if args.out else ROOT / "results" / "runtime" / f"install-size-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: {"venv_MB": round(x["venv_bytes"] / 2**20, 1), "has_torch": x["has_torch"]}
                      for k, x in v.items()}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
