"""The load test behind ``foldcnn serve-bench``: `foldcnn serve` under closed-loop clients, on loopback.

    doc = run_serve_bench(ServeBenchConfig(clients=(8, 64)), log=print)

Every model is served by its own ``foldcnn serve`` subprocess on a free loopback port (started
once, warmed up, stopped at the end). Each step (clients x request size) is run on every model
in turn, so the models see the same machine load. A step stops after ``requests`` requests or
``seconds`` seconds, whichever comes first; it records answered (200), refused (503) and other
statuses, answered requests/s and images/s, latency percentiles of answered requests, and the
server's CPU seconds per answered request (its /proc counters).

The heavy-client step: ``heavy_clients`` clients send back to back requests of
``heavy_images`` PNGs of 3999 x 4000 zeros (46 KB each on the wire, ~0.2 s each to decode);
meanwhile one client sends ``victim_requests`` one-image requests one after another; it records
the victim's latencies, the heavy requests' statuses and the server's peak RSS.

The clients run in one process of their own (:class:`foldcnn.serve.loadgen.ClientProcess`:
spawned, without torch's heap, uvloop where installed), the servers in theirs; all share the
machine's cores, as a user's clients on the same machine would. The document says so (``layout``).

Default models: random-weight apex-squad-count checkpoints written to a temporary folder (speed
does not depend on the weights): the original (fold 1), the folded model (fold ``fold``, random
weights: its answers depend on fold-mates, so ``--isolation auto`` serves it with request
isolation) and the same folded model with its cross-slot weights zeroed, recorded as trained
with cross-slot decay inf (what ``foldcnn train --cross-slot-decay inf`` leaves; auto serves it
with folds shared across requests).
"""

from __future__ import annotations

import asyncio
import datetime
import math
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from foldcnn.errors import UsageError
from foldcnn.options import option

__all__ = ["ServeBenchConfig", "run_serve_bench", "bench_checkpoints"]


@dataclass(frozen=True)
class ServeBenchConfig:
    """What `foldcnn serve-bench` runs; each field declares its flag."""

    checkpoints: tuple[str, ...] = option((), cli=False)  # empty: the three random-weight models of the docstring
    fold: int = option(4, "fold of the default folded models")
    clients: tuple[int, ...] = option((8, 16, 32, 64), "concurrent clients per step (comma list)", parse="ints")
    request_sizes: tuple[int, ...] = option((1,), "images per request (comma list)", parse="ints")
    protocol: str = option("v1", "v1: POST /v1/classify (raw PNG, multipart for several); v2: KServe v2 binary BYTES "
                           "tensor", choices=("v1", "v2"))
    requests: int = option(2000, "most requests per step and model")
    seconds: float = option(10.0, "longest a step runs per model")
    heavy_clients: int = option(0, "clients sending requests of heavy images (3999x4000 zero PNGs) while one client "
                                "times one-image requests; 0: no heavy step")
    heavy_images: int = option(25, "heavy images per heavy request")
    victim_requests: int = option(20, "one-image requests timed under the heavy mix")
    image_size: tuple[int, int] = option((19, 25), "HxW of the request images (the default models' input)",
                                         flag="--input-size", parse="size", metavar="HxW")
    threads: int = option(1, "each server's compute threads")
    serve_flags: tuple[str, ...] = option((), "more `foldcnn serve` flags for every server, e.g. '--backend ort "
                                          "--max-wait-ms 2'", parse="words")
    command: str = option("", cli=False)  # what the results record

    def __post_init__(self):
        if self.protocol not in ("v1", "v2"):
            raise UsageError(f"protocol must be v1 or v2, got {self.protocol!r}")
        for name in ("clients", "request_sizes"):
            v = getattr(self, name)
            if not v or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v):
                raise UsageError(f"{name} must be positive ints, got {v!r}")
        if self.requests < 1 or not self.seconds > 0 or self.heavy_clients < 0 or self.victim_requests < 1:
            raise UsageError("requests and victim requests must be >= 1, seconds > 0, heavy clients >= 0")


def bench_checkpoints(folder: Path, fold: int) -> list[tuple[str, Path]]:
    """(label, path) of the three default random-weight apex-squad-count checkpoints."""
    import torch

    from foldcnn.checkpoints import save_checkpoint
    from foldcnn.models import create_model
    from foldcnn.train.symmetry import shrink_cross_slot_, tie_fold_slots_, untie_fold_slots_

    out = []
    for label, f, invariant in (("f=1", 1, False), (f"f={fold}", fold, False), (f"f={fold} invariant", fold, True)):
        torch.manual_seed(0)
        model = create_model("apex-squad-count", fold=f)
        extra = {}
        if invariant:
            tie_fold_slots_(model, f)
            shrink_cross_slot_(model, 0.0)
            untie_fold_slots_(model)
            extra = {"train_config": {"cross_slot_decay": math.inf, "tie_slots": True},
                     "note": "random weights with the cross-slot weights zeroed (foldcnn serve-bench)"}
        path = folder / label.replace("=", "").replace(" ", "-")
        save_checkpoint(path, model.eval(), [f"n{i}" for i in range(model.num_classes)], extra=extra)
        out.append((label, path))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(proc: subprocess.Popen, port: int, label: str, timeout_s: float = 120.0) -> dict:
    """The /healthz answer of the server ``proc`` started on loopback ``port``, once it gives one;
    a server that exits or stays silent for ``timeout_s`` is one UsageError naming ``label``."""
    import json

    from foldcnn.serve.loadgen import http_request, send_one

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UsageError(f"{label} exited: {proc.communicate()[1].strip()[-400:]}")
        try:
            status, body = asyncio.run(send_one("127.0.0.1", port, http_request("GET", "/healthz"), 5))
            if status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.2)
    raise UsageError(f"{label} did not answer /healthz within {timeout_s:g} s")


class _Server:
    """One `foldcnn serve` subprocess on loopback."""

    def __init__(self, label: str, checkpoint: Path, cfg: ServeBenchConfig):
        self.label, self.port = label, _free_port()
        env = dict(os.environ, OMP_NUM_THREADS=str(cfg.threads))
        cmd = [sys.executable, "-m", "foldcnn", "serve", str(checkpoint), "--port", str(self.port), "--threads",
               str(cfg.threads), "--log-level", "warning", *cfg.serve_flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.health = self._wait()

    def _wait(self) -> dict:
        try:
            return wait_for_health(self.proc, self.port, f"foldcnn serve for {self.label}")
        except UsageError:
            self.stop()
            raise

    def _pids(self) -> list[int]:
        """The server and its child processes (`foldcnn serve --processes N` forks them)."""
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            kids = []
        return [self.proc.pid, *map(int, kids)]

    def cpu_s(self) -> float:
        total = 0
        for pid in self._pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        """The largest peak RSS among the server's processes."""
        peaks = [0.0]
        for pid in self._pids():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            peaks += [int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:")]
        return max(peaks)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


def _requests(cfg: ServeBenchConfig, size: int, model_name: str = "foldcnn") -> list[bytes]:
    from foldcnn.serve.loadgen import classify_request, png_bytes, v2_binary_request

    h, w = cfg.image_size
    pool = [png_bytes(h, w, seed) for seed in range(64)]
    make = classify_request if cfg.protocol == "v1" else (lambda imgs: v2_binary_request(model_name, imgs))
    return [make([pool[(i * size + j) % len(pool)] for j in range(size)]) for i in range(16)]


def _step(server: _Server, cfg: ServeBenchConfig, reqs: list[bytes], clients: int, size: int, pool) -> dict:
    from foldcnn.serve.loadgen import step_in_process

    cpu0 = server.cpu_s()
    result = pool.call(step_in_process, "127.0.0.1", server.port, reqs, clients, cfg.requests, cfg.seconds)
    cpu = server.cpu_s() - cpu0
    row = {"model": server.label, "fold": server.health["fold"], "isolation": server.health["isolation"],
           "protocol": cfg.protocol, "images_per_request": size, **result.summary()}
    row["images_per_s"] = round(row["requests_per_s"] * size, 1)
    row["server_cpu_ms_per_request"] = round(1000 * cpu / result.answered, 3) if result.answered else None
    return row


async def _heavy_mix(port: int, heavy: bytes, victim: bytes, heavy_clients: int, victim_requests: int,
                     seconds: float):
    """(the heavy clients' StepResult, the victim's, whether the attack ended before the victim did)."""
    from foldcnn.serve.loadgen import run_step

    stop = asyncio.Event()
    attack = asyncio.ensure_future(run_step("127.0.0.1", port, [heavy], clients=heavy_clients,
                                            requests=10 ** 9, seconds=seconds * 3, stop=stop))
    await asyncio.sleep(1.0)  # the attack is under way
    lat = await run_step("127.0.0.1", port, [victim], clients=1, requests=victim_requests, seconds=seconds * 3)
    alone = attack.done()  # the attack ended before the victim did: the step measured less than it says
    stop.set()
    return await attack, lat, alone


def _heavy_in_process(*args):
    """:func:`_heavy_mix` to completion (in the clients' process)."""
    from foldcnn.serve.loadgen import run_async

    return run_async(_heavy_mix(*args))


def _heavy(server: _Server, cfg: ServeBenchConfig, pool) -> dict:
    from foldcnn.serve.loadgen import classify_request, heavy_png_bytes, png_bytes

    heavy = classify_request([heavy_png_bytes()] * cfg.heavy_images)
    victim = classify_request([png_bytes(*cfg.image_size, 7)])
    heavy_result, lat, alone = pool.call(_heavy_in_process, server.port, heavy, victim, cfg.heavy_clients,
                                         cfg.victim_requests, cfg.seconds)
    s = lat.summary()
    return {"model": server.label, "heavy_clients": cfg.heavy_clients, "heavy_images": cfg.heavy_images,
            "heavy_statuses": heavy_result.summary()["statuses"], "attack_ended_early": alone,
            "victim_requests": lat.sent, "victim_statuses": s["statuses"], "victim_p50_ms": s["p50_ms"],
            "victim_max_ms": s["max_ms"], "server_peak_rss_mib": round(server.peak_rss_mib(), 1)}


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _uptime() -> str | None:
    """What `uptime` says (the machine's load, for the record), or None where it is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _layout(cfg: ServeBenchConfig) -> str:
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return (f"each model's server: `foldcnn serve --threads {cfg.threads}"
            + "".join(f" {f}" for f in cfg.serve_flags) + "` (its own process(es)); the clients: one spawned "
            f"Python process ({loop} event loop, raw HTTP/1.1 over asyncio streams, one keep-alive connection "
            f"per client); server and clients share this machine's {os.cpu_count()} logical cores, nothing pinned")


def run_serve_bench(cfg: ServeBenchConfig, log: Callable[[str], None] = lambda s: None) -> dict:
    """Run every step on every model; the results document (see the module docstring)."""
    from foldcnn.bench.report import machine_info
    from foldcnn.serve.loadgen import ClientProcess

    doc = {"format": "foldcnn-serve-bench", "command": cfg.command, "date": datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="seconds"), "commit": _commit(), "machine": machine_info(),
        "layout": _layout(cfg), "uptime_before": _uptime(), "load_before": _load(), "settings": asdict(cfg), "steps": [], "heavy": []}
    with tempfile.TemporaryDirectory(prefix="foldcnn-serve-bench-") as tmp, ClientProcess() as pool:
        models = bench_checkpoints(Path(tmp), cfg.fold) if not cfg.checkpoints else \
            [(Path(c).name, Path(c)) for c in cfg.checkpoints]
        servers: list[_Server] = []
        try:
            for label, path in models:
                servers.append(_Server(label, path, cfg))
                log(f"serving {label}: fold {servers[-1].health['fold']}, isolation {servers[-1].health['isolation']}")
            doc["models"] = [{"model": s.label, **s.health} for s in servers]
            warm = ServeBenchConfig(requests=200, seconds=5, clients=(8,), protocol=cfg.protocol)
            for s in servers:  # warm-up: connections, allocator, the rate estimates
                _step(s, warm, _requests(cfg, 1), 8, 1, pool)
            for size in cfg.request_sizes:
                reqs = _requests(cfg, size)
                for clients in cfg.clients:
                    for s in servers:
                        row = _step(s, cfg, reqs, clients, size, pool)
                        row["load"] = _load()
                        doc["steps"].append(row)
                        log(row)
            for s in servers if cfg.heavy_clients else ():
                doc["heavy"].append(_heavy(s, cfg, pool))
                log(doc["heavy"][-1])
        finally:
            for s in servers:
                s.stop()
    doc["load_after"], doc["uptime_after"] = _load(), _uptime()
    return doc


# The table of a run, as foldcnn.results.write_result takes it (one row per step and model).
COLUMNS = [{"title": "model", "cell": "{model}"}, {"title": "isolation", "cell": "{isolation}"},
           {"title": "images / request", "cell": "{images_per_request}"}, {"title": "clients", "cell": "{clients}"},
           {"title": "answered", "cell": "{answered}"}, {"title": "refused (503)", "cell": "{refused}"},
           {"title": "req/s", "cell": "{requests_per_s:,.0f}"}, {"title": "images/s", "cell": "{images_per_s:,.0f}"},
           {"title": "p50 ms", "cell": "{p50_ms:.1f}"}, {"title": "p99 ms", "cell": "{p99_ms:.1f}"},
           {"title": "server CPU ms / request", "cell": "{server_cpu_ms_per_request:.2f}"}]


def result_fields(doc: dict) -> dict:
    """write_result's keyword arguments for a run's document (rows: its steps; heavy step, models,
    settings and the load before and after as fields)."""
    s = doc["settings"]
    what = f"serve-bench {s['protocol']}" + (" heavy" if doc["heavy"] else "")
    description = (f"foldcnn serve under closed-loop loopback clients ({s['protocol']}, "
                   f"{'/'.join(map(str, s['request_sizes']))} images of {s['image_size'][0]}x{s['image_size'][1]} "
                   f"a request, clients {','.join(map(str, s['clients']))}), every model in turn per step")
    return {"what": what, "description": description, "columns": COLUMNS, "rows": doc["steps"],
            "command": doc["command"], "layout": doc["layout"], "setup": doc["settings"], "models": doc["models"],
            "heavy": doc["heavy"],
            "load_before": doc["load_before"], "load_after": doc["load_after"], "uptime_before": doc["uptime_before"],
            "uptime_after": doc["uptime_after"], "software": doc["machine"]}


def command_line(argv: list[str]) -> str:
    return "foldcnn " + " ".join(shlex.quote(a) for a in argv)
