"""What stops `foldcnn serve` for tens of milliseconds: garbage-collection pauses in the server
under closed-loop one-image clients, and how long one heavy PNG decode holds the GIL.

    .venv/bin/python experiments/published/serve_stalls.py --checkpoint CK --label now
    .venv/bin/python experiments/published/serve_stalls.py --checkpoint CK --label before --server-src /tmp/base/src

Writes results/serving/stalls-LABEL.json (command, date, CPU, commit, load): the server's
collections by generation (count, median and longest pause, timed by gc.callbacks inside the
server process, those that began during the measured step), the clients' latencies (p50, p99, max, requests over 100 ms), and, in this
process, the longest gap a 1 ms ticker thread saw while one 3999 x 4000 PNG of zeros decoded
by libspng and by Pillow (the server's decode_image, large-PNG threshold forced either way).
The clients run in a spawned process of their own (foldcnn.serve.loadgen.ClientProcess);
--server-src runs another tree's server (its src/ first on PYTHONPATH). Flags after `--` go to
`foldcnn serve`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

# Runs `foldcnn serve` with every collection timed; the pauses go to $STALLS_OUT at exit.
SERVER = """
import atexit, gc, json, os, runpy, sys, time
pauses, t0 = [], [0.0]
gc.callbacks.append(lambda phase, info: t0.__setitem__(0, time.perf_counter()) if phase == "start"
                    else pauses.append((info["generation"], (time.perf_counter() - t0[0]) * 1000, time.time())))
atexit.register(lambda: open(os.environ["STALLS_OUT"], "w").write(json.dumps(pauses)))
sys.argv = ["foldcnn"] + sys.argv[1:]
runpy.run_module("foldcnn", run_name="__main__")
"""


def gil_gap_ms(fn) -> float:
    """The longest gap between the ticks of a thread sleeping 1 ms while ``fn()`` runs here."""
    gaps, done = [], threading.Event()

    def tick():
        last = time.perf_counter()
        while not done.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    t = threading.Thread(target=tick)
    t.start()
    time.sleep(0.05)
    fn()
    time.sleep(0.02)
    done.set()
    t.join()
    return round(max(gaps) * 1000, 1)


def decode_gaps() -> dict:
    from foldcnn.serve import validation
    from foldcnn.serve.loadgen import heavy_png_bytes

    data, limits = heavy_png_bytes(), validation.ImageLimits()
    out, saved = {}, validation.FAST_PNG_PIXELS
    try:
        for name, threshold in (("libspng", 1 << 40), ("pillow", 0)):
            validation.FAST_PNG_PIXELS = threshold
            gaps = [gil_gap_ms(lambda: validation.decode_image(data, (3, 19, 25), limits)) for _ in range(3)]
            out[name] = {"longest_gap_ms": gaps}
    finally:
        validation.FAST_PNG_PIXELS = saved
    return out


def pause_stats(pauses: list) -> dict:
    by_gen = {}
    for gen in (0, 1, 2):
        ms = sorted(p for g, p in pauses if g == gen)
        if ms:
            by_gen[f"gen{gen}"] = {"count": len(ms), "median_ms": round(ms[len(ms) // 2], 2),
                                   "max_ms": round(ms[-1], 1), "total_ms": round(sum(ms), 1)}
    return by_gen


def run_server(args, serve_flags: list[str], tmp: str) -> tuple[dict, dict]:
    """(the clients' latencies, the server's collections during the run)."""
    from foldcnn.serve.loadgen import ClientProcess, classify_request, png_bytes, step_in_process
    from foldcnn.workflows.serve_bench import _free_port, wait_for_health

    port, out = _free_port(), Path(tmp) / "pauses.json"
    env = dict(os.environ, PYTHONPATH=args.server_src or str(ROOT / "src"), OMP_NUM_THREADS="1", STALLS_OUT=str(out))
    server = subprocess.Popen([sys.executable, "-c", SERVER, "serve", args.checkpoint, "--port", str(port),
                               "--threads", "1", "--log-level", "warning", *serve_flags], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_health(server, port, "the server")
        reqs = [classify_request([png_bytes(19, 25, s)]) for s in range(64)]
        with ClientProcess() as clients:
            clients.call(step_in_process, "127.0.0.1", port, reqs, 8, 200, 5.0)  # warm-up
            started = time.time()
            step = clients.call(step_in_process, "127.0.0.1", port, reqs, args.clients, args.requests, 30.0)
    finally:
        server.terminate()
        server.wait(60)
    lat = np.asarray(step.latencies_ms)
    latencies = {**step.summary(), "over_100_ms": int((lat > 100).sum()), "p90_ms": round(float(np.percentile(lat, 90)), 2)}
    pauses = [(g, ms) for g, ms, at in json.loads(out.read_text()) if at >= started] if out.exists() else []
    return latencies, pause_stats(pauses)


def main() -> int:
    from serve_profile import server_parser, write_document  # this folder's sibling: what both share

    p, argv, serve_flags = server_parser(__doc__, clients=64)
    p.add_argument("--requests", type=int, default=6000)
    args = p.parse_args(argv)

    from foldcnn.workflows.serve_bench import _uptime

    uptime_before = _uptime()
    with tempfile.TemporaryDirectory() as tmp:
        latencies, collections = run_server(args, serve_flags, tmp)
    write_document("stalls", args, serve_flags, {
        "uptime_before": uptime_before, "latencies": latencies, "server_collections_during_the_step": collections,
        "decode_3999x4000_png_gil": decode_gaps(), "uptime_after": _uptime()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
