"""Load test of `foldcnn serve`: N concurrent clients, the folded model's server vs the unfolded one.

    .venv/bin/python experiments/published/load_test.py --unfolded runs/f1/checkpoint --folded runs/f4/checkpoint \
        --clients 16 --seconds 10 --max-wait-ms 5        # about 1 min on 2 cores; prints a markdown table
    # add --images-per-request 128 to load the model rather than the HTTP path, --backend ort for ONNX Runtime

Three servers, one after the other, each with the same --max-wait-ms, --max-batch and --backend:
  unfolded  the fold=1 checkpoint (the baseline);
  folded    the fold>1 checkpoint of the same task (if --folded is given);
  oracle    the unfolded model copied f times block-diagonally into a fold-f model (f = the folded
            model's fold, or 4): it runs through folds, fold-mates and zero padding exactly like a
            folded model but gives each image exactly the unfolded model's answer, so routing through
            folds can be checked exactly. It has f x the FLOPs: its speed means nothing.
Each is started as `foldcnn serve` on a free loopback port (or reached at --unfolded-url /
--folded-url); --clients asyncio clients (httpx, one connection each, spread over --client-procs
processes) send requests for --seconds (at most --max-requests in all). A request holds
1..--images-per-request images of the task (generated with --seed, unseen in training) as one
raw PNG body or multipart; PNG is lossless, so the server decodes exactly the offline pixels.

What "correct" means. Every answer is compared with the offline Predictor's answer for the same
image, computed beforehand. Unfolded and oracle ("exact" check): an image's answer cannot depend
on its batch- or fold-mates, so class index and confidence (within 1e-4: fp32 sums vary a little
with the batch) must equal the offline answer; an answer routed to another image fails unless both
images share class and confidence. Folded ("class" check): an image's logits depend on its f-1
fold-mates, which the server picks by arrival order, so exact equality is not defined. Its pool
holds only fold-stable images: the offline class is the same under --regroupings random fold
groupings (also among pool images) and alone with f-1 zero fold-mates (a lone request is served
so), and, when at least 32 exist, correct with confidence >= --min-confidence. A class mismatch
there is a suspected misroute. Requests draw images of different expected classes, so swapped
answers show; the table gives the pool's class count (the power of the check). A folded model
with no fold-stable image (untrained) is still timed, with check "none".
Lost: images of a request with no 200 answer or with the wrong number of results.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

CONFIDENCE_TOL = 1e-4


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--unfolded", required=True, help="checkpoint of the unfolded model (fold = 1)")
    p.add_argument("--folded", help="checkpoint of the folded model (fold > 1) of the same task")
    p.add_argument("--oracle-fold", type=int, default=None,
                   help="fold of the exact-routing oracle (default: the folded model's fold, else 4; 0: skip it)")
    p.add_argument("--unfolded-url", help="connect to this running server instead of starting one")
    p.add_argument("--folded-url", help="connect to this running server instead of starting one")
    p.add_argument("--task", help="game task of the images (default: the checkpoint's model name)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--client-procs", type=int, default=1,
                   help="processes the clients are spread over (use more on a machine with spare cores)")
    p.add_argument("--seconds", type=float, default=10.0, help="duration per server")
    p.add_argument("--max-requests", type=int, default=20_000, help="bound on requests per server")
    p.add_argument("--images-per-request", type=int, default=4, help="each request: 1..this many images")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--max-batch", type=int, default=1024)
    p.add_argument("--backend", default="eager", help="server and offline backend")
    p.add_argument("--threads", type=int, default=None, help="server compute threads")
    p.add_argument("--pool", type=int, default=2000, help="generated images to choose the pool from")
    p.add_argument("--seed", type=int, default=1234, help="seed of the generated images (unseen by training)")
    p.add_argument("--regroupings", type=int, default=4, help="random fold groupings an image must be stable under")
    p.add_argument("--min-confidence", type=float, default=0.9)
    p.add_argument("--api-key", default=None)
    p.add_argument("--isolation", choices=("request", "key", "none"), default="request",
                   help="the servers' fold isolation (foldcnn serve --isolation)")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args()


# ----------------------------------------------------------------------------- offline answers
@dataclass
class Pool:
    fold: int
    check: str  # "exact": class and confidence; "class": class only; "none": nothing can be checked
    blobs: list[bytes]  # PNG files
    expected: np.ndarray  # (n,) class index, offline
    confidence: np.ndarray  # (n,) offline confidence of that class
    criterion: str
    by_class: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self):
        for j, c in enumerate(self.expected.tolist()):
            self.by_class.setdefault(c, []).append(j)


def block_diagonal_fold(model, fold: int):
    """An exact folded copy of an unfolded zoo model: fold=f, every layer f times wider with f
    copies of the original weights on the diagonal, so image j of a fold sees only its own channels
    and gets exactly the unfolded model's logits, whatever its fold-mates (zero padding included).
    Its FLOPs are f x the original's: it checks routing through folds, not speed."""
    import torch
    from torch import nn

    from foldcnn import create_model

    cfg = model.config
    big = create_model(cfg.name, fold=fold, width_mult=float(fold), channel_multiple=1, **cfg.kwargs)
    allowed = (nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Sequential, nn.Dropout)
    small_layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    big_layers = [m for m in big.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    bad = {type(m).__name__ for m in model.modules() if m is not model and not isinstance(m, allowed)}
    if bad or len(small_layers) != len(big_layers):
        raise SystemExit(f"the oracle needs a plain conv/linear model; {cfg.name} has {sorted(bad)}; "
                         "pass --oracle-fold 0")
    with torch.no_grad():
        for s, b in zip(small_layers, big_layers):
            o, i = s.weight.shape[:2]
            if b.weight.shape[:2] != (o * fold, i * fold):
                raise SystemExit(f"{cfg.name}: layer shapes do not allow a block-diagonal oracle; pass --oracle-fold 0")
            b.weight.zero_()
            for j in range(fold):
                b.weight[j * o:(j + 1) * o, j * i:(j + 1) * i] = s.weight
            b.bias.copy_(s.bias.repeat(fold))
    return big.eval()


def offline(p, images, rounds: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(rounds, n) class indices and confidences: input order, then random fold groupings, then
    (folded models) each image alone with f-1 zero fold-mates, as a lone request is served."""
    import torch

    n, f = len(images), p.fold
    idx, conf = np.empty((rounds + (f > 1), n), np.int64), np.empty((rounds + (f > 1), n), np.float32)
    for r in range(rounds):
        perm = rng.permutation(n) if r else np.arange(n)
        k, probs = p.predict_arrays(images[perm])
        idx[r, perm], conf[r, perm] = k, probs[np.arange(n), k]
    if f > 1:
        alone = torch.zeros((n * f, *images.shape[1:]), dtype=images.dtype)
        alone[::f] = images
        k, probs = p.predict_arrays(alone)
        idx[-1], conf[-1] = k[::f], probs[np.arange(0, n * f, f), k[::f]]
    return idx, conf


def make_pool(p, ds, args, exact: bool) -> Pool:
    """The images a server's clients send, with the offline answer each must get back."""
    rng = np.random.default_rng(args.seed)
    idx, conf = offline(p, ds.images, 1 if exact else args.regroupings, rng)
    stable = (idx == idx[0]).all(axis=0)
    good = stable & (idx[0] == ds.labels.numpy()) & (conf.min(axis=0) >= args.min_confidence)
    keep, criterion = (good, "correct, confident") if good.sum() >= 32 else (stable, "any answer")
    if not exact:
        criterion = "fold-stable, " + criterion
    chosen = np.flatnonzero(keep)
    if not exact:  # at serve time fold-mates come from the pool itself: check stability there too
        for _ in range(args.regroupings):
            if not len(chosen):
                break
            again, _ = offline(p, ds.images[chosen], 2, rng)
            chosen = chosen[(again == idx[0, chosen]).all(axis=0)]
    check = "exact" if exact else "class"
    if not len(chosen):  # an untrained folded model: still measure speed, but nothing can be checked
        chosen, check, criterion = np.arange(len(ds)), "none", "no fold-stable image (model untrained?)"
    blobs = []
    for i in chosen:
        buf = io.BytesIO()
        Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    return Pool(p.fold, check, blobs, idx[0, chosen], conf[0, chosen], criterion)


# ------------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(ckpt: str, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "foldcnn", "serve", ckpt, "--port", str(port), "--max-wait-ms",
           str(args.max_wait_ms), "--batch-size", str(args.max_batch), "--isolation", args.isolation,
           "--backend", args.backend,
           "--log-level", "warning"]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    env = dict(os.environ, **({"FOLDCNN_API_KEY": args.api_key} if args.api_key else {}))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become healthy within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # graceful: in-flight requests finish
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def server_metrics(url: str, headers: dict) -> dict[str, float]:
    import httpx

    out = {}
    for line in httpx.get(url + "/metrics", headers=headers, timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# ------------------------------------------------------------------------------------ clients
@dataclass
class Tally:
    requests: int = 0
    images: int = 0
    lost: int = 0
    mismatched: int = 0
    misrouted: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


def pick(pool: Pool, m: int, rng: np.random.Generator) -> list[int]:
    """m pool images with different expected classes where possible."""
    classes = list(pool.by_class)
    order = rng.permutation(len(classes))
    out = []
    for j in range(m):
        members = pool.by_class[classes[order[j % len(classes)]]]
        out.append(members[rng.integers(len(members))])
    return out


async def client(k: int, url: str, pool: Pool, args, tally: Tally, deadline: float, headers: dict,
                 warm: bool = False) -> None:
    import httpx

    rng = np.random.default_rng(args.seed + 1000 + k)
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as c:
        while warm or (time.monotonic() < deadline and tally.requests < args.max_requests):
            m = int(rng.integers(1, args.images_per_request + 1))
            chosen = pick(pool, m, rng)
            t0 = time.perf_counter()
            try:
                if m == 1:
                    r = await c.post("/v1/classify", content=pool.blobs[chosen[0]],
                                     headers={"Content-Type": "image/png"})
                else:
                    r = await c.post("/v1/classify", files=[("files", (f"{i}.png", pool.blobs[i], "image/png"))
                                                            for i in chosen])
                results = r.json().get("results") if r.status_code == 200 else None
            except (httpx.HTTPError, ValueError) as e:
                r, results = None, None
                tally.errors[type(e).__name__] = tally.errors.get(type(e).__name__, 0) + 1
            latency_ms = (time.perf_counter() - t0) * 1000
            if warm:
                return
            tally.requests += 1
            tally.images += m
            tally.latencies_ms.append(latency_ms)
            if results is None or len(results) != m:
                tally.lost += m
                if r is not None:
                    key = f"HTTP {r.status_code}"
                    tally.errors[key] = tally.errors.get(key, 0) + 1
                continue
            for i, res in zip(chosen, results):
                wrong_class = res["class_index"] != int(pool.expected[i])
                tally.mismatched += wrong_class
                if pool.check == "exact":  # batch- and fold-mates cannot change this model's answer
                    tally.misrouted += bool(wrong_class or abs(res["confidence"] - float(pool.confidence[i]))
                                            > CONFIDENCE_TOL)
                else:  # fold-stable images: a class mismatch is a suspected misroute
                    tally.misrouted += wrong_class


async def load(url: str, pool: Pool, args, headers: dict, clients: range) -> tuple[Tally, float]:
    await asyncio.gather(*(client(k, url, pool, args, Tally(), 0, headers, warm=True) for k in clients))
    tally = Tally()
    t0 = time.monotonic()
    await asyncio.gather(*(client(k, url, pool, args, tally, t0 + args.seconds, headers) for k in clients))
    return tally, time.monotonic() - t0


def load_in_process(url: str, pool: Pool, args, headers: dict, clients: range) -> tuple[Tally, float]:
    return asyncio.run(load(url, pool, args, headers, clients))


def run_clients(url: str, pool: Pool, args, headers: dict) -> tuple[Tally, float]:
    """--clients spread over --client-procs processes (the client side is Python too)."""
    procs = max(1, min(args.client_procs, args.clients))
    if procs == 1:
        return load_in_process(url, pool, args, headers, range(args.clients))
    import concurrent.futures
    import multiprocessing

    share = argparse.Namespace(**{**vars(args), "max_requests": -(-args.max_requests // procs)})
    parts = [range(i, args.clients, procs) for i in range(procs)]
    with concurrent.futures.ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as ex:
        done = list(ex.map(load_in_process, [url] * procs, [pool] * procs, [share] * procs, [headers] * procs, parts))
    total = Tally()
    for t, _ in done:
        for k in ("requests", "images", "lost", "mismatched", "misrouted"):
            setattr(total, k, getattr(total, k) + getattr(t, k))
        total.latencies_ms += t.latencies_ms
        for e, c in t.errors.items():
            total.errors[e] = total.errors.get(e, 0) + c
    return total, max(s for _, s in done)


def run_one(name: str, ckpt: str, url: str | None, pool: Pool, args) -> dict:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    proc = None
    if url is None:
        proc, url = start_server(ckpt, args)
    try:
        before = server_metrics(url, headers)
        tally, elapsed_s = run_clients(url, pool, args, headers)
        after = server_metrics(url, headers)
    finally:
        if proc is not None:
            stop_server(proc)
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    batches = d.get("foldcnn_batches_total", 0.0)
    lat = sorted(tally.latencies_ms)
    return {
        "server": name, "fold": pool.fold, "check": pool.check,
        "pool_images": len(pool.blobs), "pool_classes": len(pool.by_class), "pool_criterion": pool.criterion,
        "clients": args.clients, "seconds": round(elapsed_s, 2), "requests": tally.requests, "images": tally.images,
        "images_per_s": (tally.images - tally.lost) / elapsed_s, "requests_per_s": tally.requests / elapsed_s,
        "p50_ms": statistics.median(lat) if lat else float("nan"),
        "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        "mean_batch_images": d.get("foldcnn_images_total", 0.0) / batches if batches else 0.0,
        "padded_images": int(d.get("foldcnn_padded_images_total", 0)),
        "model_busy": d.get("foldcnn_batch_compute_seconds_sum", 0.0) / elapsed_s,
        "mean_queue_wait_ms": 1000 * d.get("foldcnn_batch_queue_wait_seconds_sum", 0.0) / max(batches, 1),
        "lost": int(tally.lost), "mismatched": int(tally.mismatched), "misrouted": int(tally.misrouted),
        "errors": tally.errors,
    }


def table(rows: list[dict], args) -> str:
    head = ("| server | fold | requests | images | images/s | p50 ms | p99 ms | images/batch | model busy | "
            "padded | lost | check | mismatches | pool: images (classes), criterion |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['fold']} | {r['requests']:,} | {r['images']:,} | {r['images_per_s']:,.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch_images']:.1f} | {r['model_busy']:.0%} | "
            f"{r['padded_images']:,} | "
            f"{r['lost']} | {r['check']} | {r['misrouted'] if r['check'] != 'none' else 'n/a'} | "
            f"{r['pool_images']} ({r['pool_classes']}), "
            f"{r['pool_criterion']} |")
    lines.append(
        f"\n{args.clients} clients, {args.seconds:g} s per server, 1..{args.images_per_request} images per request, "
        f"max-wait {args.max_wait_ms:g} ms, max-batch {args.max_batch}, backend {args.backend}. Check 'exact': "
        f"class and confidence (1e-4) equal the offline answer of the image itself; 'class': class index on "
        f"fold-stable images (a mismatch is a suspected misroute). Model busy: share of the time the "
        f"server spent inside the model (the rest is HTTP, decoding and the clients). The oracle is the "
        f"unfolded model copied f "
        f"times block-diagonally into a fold-f model: exact answers through folds, f x the FLOPs.")
    return "\n".join(lines)


def main() -> int:
    import tempfile

    from foldcnn.data.game_text import GameTextDataset
    from foldcnn.infer import Predictor
    from foldcnn.checkpoints import load_checkpoint, save_checkpoint

    args = parse_args()
    opts = dict(backend=args.backend, batch_size=args.max_batch, workers=0)
    base = load_checkpoint(args.unfolded)
    if base.fold != 1:
        raise SystemExit(f"--unfolded must be a fold=1 checkpoint; {args.unfolded} has fold={base.fold}")
    task = args.task or base.model.config.name
    ds = GameTextDataset(task, args.pool, seed=args.seed)
    if list(ds.classes) != base.class_names:
        raise SystemExit(f"{args.unfolded} was not trained on task {task}'s classes; pass --task")
    unfolded = Predictor(base.model, base.class_names, **opts)
    exact_pool = make_pool(unfolded, ds, args, exact=True)
    runs = [("unfolded", args.unfolded, args.unfolded_url, exact_pool)]
    folded_fold = 4
    if args.folded:
        folded = Predictor.from_checkpoint(args.folded, **opts)
        if folded.fold == 1 or folded.class_names != base.class_names:
            raise SystemExit("--folded must be a fold>1 checkpoint of the same task as --unfolded")
        folded_fold = folded.fold
        runs.append(("folded", args.folded, args.folded_url, make_pool(folded, ds, args, exact=False)))
    oracle_fold = folded_fold if args.oracle_fold is None else args.oracle_fold
    with tempfile.TemporaryDirectory() as tmp:
        if oracle_fold > 1:
            oracle = save_checkpoint(f"{tmp}/oracle", block_diagonal_fold(base.model, oracle_fold), base.class_names)
            runs.append(("oracle", str(oracle), None, Pool(oracle_fold, "exact", exact_pool.blobs, exact_pool.expected,
                                                           exact_pool.confidence, exact_pool.criterion)))
        rows = [run_one(*r, args) for r in runs]
    print(table(rows, args))
    for r in rows:
        if r["errors"]:
            print(f"{r['server']} errors: {r['errors']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": rows}, f, indent=2)
    return 0 if all(r["lost"] == 0 and (r["misrouted"] == 0 or r["check"] != "exact") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
