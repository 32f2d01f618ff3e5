"""Can one heavy client stall the others? One heavy client against `foldcnn serve` (docs/serving.md).

    flock /tmp/bench.lock .venv/bin/python experiments/lab/load_attack.py --seconds 20
    # prints a markdown table; about 1 min on 2 cores. --checkpoint CKPT serves a trained model
    # (default: a random-weight apex-squad-count f=4 one: latency does not depend on the weights)
    flock /tmp/bench.lock .venv/bin/python experiments/lab/load_attack.py --big-bodies 20
    # the big-bodies test instead: 20 concurrent raw bodies of 60 MiB; answers and server memory

One `foldcnn serve` on a free loopback port (the running Python's foldcnn, so PYTHONPATH picks the
version under test). --attackers clients (a separate process) each send, back to back, multipart
requests of --attack-images PNGs of zeros, --attack-size WxH (3999x4000: 46 KB each, under the
default --max-pixels, ~0.2 s each to decode). Meanwhile a victim client (this process) sends one
small PNG at a time, one request after another, and times each answer. Reported: the victim's
p50/p99 latency with and without the attack, the attackers' answers by status, and the server's
peak resident memory (VmHWM of its process, Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "published"))
from load_test import start_server, stop_server  # noqa: E402 - sibling experiment


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint to serve (default: random-weight apex-squad-count, fold 4)")
    p.add_argument("--attackers", type=int, default=8, help="heavy clients")
    p.add_argument("--attack-images", type=int, default=25, help="images per heavy request")
    p.add_argument("--attack-size", default="3999x4000", help="width x height of each heavy PNG (all zeros)")
    p.add_argument("--seconds", type=float, default=20.0, help="attack duration (the victim runs as long)")
    p.add_argument("--quiet-seconds", type=float, default=5.0, help="victim alone first, for its idle latency")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--max-batch", type=int, default=1024)
    p.add_argument("--backend", default="eager")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--big-bodies", type=int, default=0,
                   help="instead of the decoding attack: this many concurrent raw image bodies of --body-mib")
    p.add_argument("--body-mib", type=int, default=60)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    args.api_key = None  # what load_test.start_server reads
    return args


def zeros_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def rss_mib(pid: int, field: str = "VmHWM") -> float:
    """VmHWM: the most resident memory the process ever had; VmRSS: now (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def send_big_body(url: str, size: int) -> str:
    """POST ``size`` zero bytes as one raw image; the answer's status, or what stopped the upload."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=120) as s:
        s.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  f"Content-Length: {size}\r\n\r\n".encode())
        block = b"\0" * (1 << 20)
        try:
            for _ in range(size >> 20):
                s.sendall(block)
        except OSError as e:  # the server answered and closed before the rest was sent
            outcome = type(e).__name__
        else:
            outcome = "sent"
        try:
            head = s.recv(64)
            return head.split()[1].decode() if head else f"closed ({outcome})"
        except OSError as e:
            return f"{type(e).__name__} ({outcome})"


def big_bodies(url: str, pid: int, n: int, mib: int) -> dict:
    """The big-bodies test: ``n`` concurrent raw bodies of ``mib`` MiB; answers, time, server memory."""
    import concurrent.futures

    before = rss_mib(pid, "VmRSS")
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        outcomes = list(ex.map(lambda _: send_big_body(url, mib << 20), range(n)))
    seconds = time.perf_counter() - t0
    time.sleep(1.0)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    return {"bodies": n, "body_mib": mib, "answers": counts, "seconds": seconds, "rss_before_mib": before,
            "rss_after_mib": rss_mib(pid, "VmRSS"), "peak_rss_mib": rss_mib(pid)}


async def _attack(url: str, blob: bytes, n_images: int, clients: int, seconds: float) -> dict:
    import httpx

    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    async def one(k: int) -> None:
        files = [("files", (f"{i}.png", blob, "image/png")) for i in range(n_images)]
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            while time.monotonic() < deadline:
                try:
                    r = await c.post("/v1/classify", files=files)
                    key = str(r.status_code)
                except httpx.HTTPError as e:
                    key = type(e).__name__
                statuses[key] = statuses.get(key, 0) + 1

    await asyncio.gather(*(one(k) for k in range(clients)))
    return statuses


def attack(url: str, blob: bytes, n_images: int, clients: int, seconds: float, out) -> None:
    out.put(asyncio.run(_attack(url, blob, n_images, clients, seconds)))


async def victim(url: str, blob: bytes, seconds: float) -> list[float]:
    """Latencies (ms) of one-image requests sent one after another for ``seconds``."""
    import httpx

    lat = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            r = await c.post("/v1/classify", content=blob, headers={"Content-Type": "image/png"})
            lat.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"the victim's request failed: {r.status_code} {r.text}")
    return lat


def summary(lat: list[float]) -> dict:
    s = sorted(lat)
    return {"requests": len(s), "p50_ms": statistics.median(s),
            "p99_ms": s[min(len(s) - 1, int(0.99 * len(s)))], "max_ms": s[-1]}


def main() -> int:
    from foldcnn import create_model
    from foldcnn.checkpoints import load_checkpoint, save_checkpoint

    args = parse_args()
    w, h = (int(v) for v in args.attack_size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            model = create_model("apex-squad-count", fold=4)
            ckpt = str(save_checkpoint(f"{tmp}/ck", model, [f"n{i}" for i in range(model.num_classes)]))
        _, ih, iw = load_checkpoint(ckpt).model.input_shape
        small = zeros_png(iw, ih)
        heavy = zeros_png(w, h)
        proc, url = start_server(ckpt, args)
        if args.big_bodies:
            try:
                asyncio.run(victim(url, small, 1.0))  # warm-up: the model's memory is in the baseline
                got = big_bodies(url, proc.pid, args.big_bodies, args.body_mib)
            finally:
                stop_server(proc)
            print(f"{got['bodies']} concurrent raw bodies of {got['body_mib']} MiB: answers {got['answers']} in "
                  f"{got['seconds']:.1f} s; server RSS {got['rss_before_mib']:,.0f} MiB before, "
                  f"{got['rss_after_mib']:,.0f} MiB after, peak {got['peak_rss_mib']:,.0f} MiB")
            if args.json:
                import json

                Path(args.json).write_text(json.dumps({"args": vars(args), **got}, indent=2))
            return 0
        try:
            asyncio.run(victim(url, small, 1.0))  # warm-up
            quiet = summary(asyncio.run(victim(url, small, args.quiet_seconds)))
            results = multiprocessing.get_context("spawn").Queue()
            attackers = multiprocessing.get_context("spawn").Process(
                target=attack, args=(url, heavy, args.attack_images, args.attackers, args.seconds, results))
            attackers.start()
            time.sleep(1.0)  # let the heavy requests arrive first
            loaded = summary(asyncio.run(victim(url, small, args.seconds - 1.0)))
            statuses = results.get(timeout=300)
            attackers.join()
            peak = rss_mib(proc.pid)
        finally:
            stop_server(proc)
    import foldcnn

    row = {"quiet": quiet, "attacked": loaded, "attack_statuses": statuses, "server_peak_rss_mib": peak,
           "foldcnn": str(Path(foldcnn.__file__).parent), "heavy_png_bytes": len(heavy)}
    print(f"attack: {args.attackers} clients x {args.attack_images} PNGs of {w}x{h} zeros ({len(heavy):,} bytes "
          f"each), {args.seconds:g} s; victim: one {iw}x{ih} PNG per request, one request at a time\n")
    print("| victim | requests | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
    for name, s in (("alone", quiet), ("under attack", loaded)):
        print(f"| {name} | {s['requests']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} |")
    print(f"\nattackers' answers by status: {statuses}; server peak RSS {peak:,.0f} MiB; foldcnn from {row['foldcnn']}")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"args": vars(args), **row}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
