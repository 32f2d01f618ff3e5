"""Where a one-image request's server CPU goes: `foldcnn serve` under closed-loop loopback clients,
sampled by py-spy, its samples sorted into layers by the innermost frame that names one.

    .venv/bin/python experiments/published/serve_profile.py --checkpoint CK --label now -- --loop asyncio --http h11
    .venv/bin/python experiments/published/serve_profile.py --checkpoint CK --label base --server-src /tmp/base/src

Writes results/serving/profile-LABEL.json (command, date, CPU, commit, load, the request rate,
server CPU ms per request from /proc, and the share of py-spy samples per layer). py-spy samples
threads that hold or wait for the GIL alike, so the shares are of sampled stacks, not of CPU
seconds; the CPU per request is the /proc figure. Needs py-spy (pip install py-spy) and a
checkpoint (e.g. a random-weight apex-squad-count f=4 one: the profile does not depend on weights).
Flags after `--` go to `foldcnn serve`. --server-src runs another tree's server (its src/ first
on PYTHONPATH), with this tree's load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

# (layer, pattern on a frame); a sample goes to the first layer met walking from the leaf to the root.
LAYERS = [("model: torch forward", r"torch/|torch_backends"),
          ("model: Predictor glue", r"foldcnn/infer|foldcnn/backends|foldcnn/fold"),
          ("batcher", r"serve/batcher\.py"),
          ("decode: PNG, Pillow, numpy", r"PIL/|pyspng|validation\.py|readers\.py|numpy"),
          ("decode pool bookkeeping", r"serve/decoding\.py"),
          ("handler: foldcnn.serve.app, result JSON", r"serve/app\.py|infer/results|json/"),
          ("ASGI: starlette, fastapi routing and middleware", r"starlette|fastapi"),
          ("HTTP protocol: uvicorn, h11, httptools", r"uvicorn/|h11/|httptools"),
          ("thread hand-off: concurrent.futures, threading", r"concurrent/futures|threading\.py|queue\.py"),
          ("event loop: asyncio, uvloop (C code under Runner.run)", r"asyncio|uvloop|runners")]


def categorize(raw: str) -> tuple[dict[str, float], int]:
    counts: collections.Counter = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        for frame in reversed(stack.split(";")):
            layer = next((name for name, pat in LAYERS if re.search(pat, frame)), None)
            if layer:
                counts[layer] += int(n)
                break
        else:
            counts["other"] += int(n)
    return {k: round(100 * v / total, 1) for k, v in counts.most_common()}, total


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_parser(description: str, clients: int) -> tuple[argparse.ArgumentParser, list[str], list[str]]:
    """The flags every serving experiment takes (checkpoint, label, clients, server source), and
    this command line split at ``--``: (parser, its own arguments, flags for `foldcnn serve`)."""
    argv = sys.argv[1:]
    serve_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=description.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--label", required=True, help="names the results file")
    p.add_argument("--clients", type=int, default=clients)
    p.add_argument("--server-src", help="src/ folder of the tree whose server to run (default: this tree)")
    return p, argv, serve_flags


def main() -> int:
    p, argv, serve_flags = server_parser(__doc__, clients=16)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = p.parse_args(argv)

    from foldcnn.workflows.serve_bench import _free_port, wait_for_health
    from foldcnn.serve.loadgen import classify_request, png_bytes, run_step

    port = _free_port()
    src = args.server_src or str(ROOT / "src")
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1")
    server = subprocess.Popen([sys.executable, "-m", "foldcnn", "serve", args.checkpoint, "--port", str(port),
                               "--threads", "1", "--log-level", "warning", *serve_flags], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_health(server, port, "the server")
        reqs = [classify_request([png_bytes(19, 25, s)]) for s in range(64)]
        asyncio.run(run_step("127.0.0.1", port, reqs, clients=args.clients, requests=500, seconds=5))  # warm-up
        load_before = [round(x, 2) for x in os.getloadavg()]
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.txt"
            spy = subprocess.Popen(["py-spy", "record", "-p", str(server.pid), "-d", str(int(args.seconds) + 1),
                                    "-r", str(args.rate), "-f", "raw", "-o", str(raw), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            c0 = cpu_s(server.pid)
            step = asyncio.run(run_step("127.0.0.1", port, reqs, clients=args.clients, requests=10 ** 9,
                                        seconds=args.seconds))
            cpu = cpu_s(server.pid) - c0
            spy.wait(60)
            layers, samples = categorize(raw.read_text())
    finally:
        server.terminate()
        server.wait(60)
    summary = step.summary()
    write_document("profile", args, serve_flags, {
        "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()], "requests": summary,
        "server_cpu_ms_per_request": round(1000 * cpu / summary["answered"], 3),
        "pyspy_samples": samples, "sample_share_percent_by_layer": layers})
    return 0


def write_document(kind: str, args, serve_flags: list[str], body: dict) -> None:
    """results/serving/KIND-LABEL.json: the command, date, commit, CPU and settings, then ``body``."""
    from foldcnn.bench.report import machine_info
    from foldcnn.workflows.serve_bench import _commit

    doc = {"command": f"python experiments/published/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:]),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": _commit(), "server_src": args.server_src or str(ROOT / "src"),
           "cpu_model": machine_info()["cpu_model"], "serve_flags": serve_flags, "clients": args.clients, **body}
    out = ROOT / "results" / "serving" / f"{kind}-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    sys.exit(main())
