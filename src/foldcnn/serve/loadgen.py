"""A loopback load generator for ``foldcnn serve-bench`` (and for profiling the server).

    result = asyncio.run(run_step("127.0.0.1", 8000, [request_bytes], clients=64, requests=2000, seconds=20))

Each client holds one keep-alive HTTP/1.1 connection and sends its requests one after another
(closed loop); the requests are prepared bytes (head and body), so the client costs little CPU
next to the server it measures. Plain asyncio streams, no HTTP library: a response is read by its
status line, its headers and its ``Content-Length``. A request's latency is measured by its
client, from the write of its first byte to the last byte of its answer.

Where the clients run matters as much as what they cost: clients inside a process that imported
torch share its garbage collector, whose full collections walk some 200,000 objects and stop
every client for 100+ ms. :class:`ClientProcess` runs them in a process of their own (spawned:
numpy and the standard library only, uvloop where installed, its start-up heap frozen).

    with ClientProcess() as clients:
        result = clients.call(step_in_process, "127.0.0.1", 8000, [request_bytes], 64, 2000, 20.0)
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import gc
import io
import json
import multiprocessing
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["StepResult", "http_request", "png_bytes", "run_step", "classify_request", "v2_binary_request",
           "v2_json_request", "heavy_png_bytes", "ClientProcess", "step_in_process", "run_async"]


def png_bytes(height: int, width: int, seed: int = 0) -> bytes:
    """A random RGB PNG of ``height`` x ``width``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def heavy_png_bytes(height: int = 4000, width: int = 3999) -> bytes:
    """A PNG of zeros: small on the wire (~46 KB at 3999x4000), slow and large to decode."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def http_request(method: str, path: str, body: bytes = b"", content_type: str | None = None,
                 headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one HTTP/1.1 request (keep-alive)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def classify_request(images: list[bytes]) -> bytes:
    """``POST /v1/classify``: one image as a raw body, several as multipart files."""
    if len(images) == 1:
        return http_request("POST", "/v1/classify", images[0], "image/png")
    boundary = "foldcnnbench"
    parts = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{i}.png\"\r\n"
                     f"Content-Type: image/png\r\n\r\n".encode() + blob + b"\r\n" for i, blob in enumerate(images))
    return http_request("POST", "/v1/classify", parts + f"--{boundary}--\r\n".encode(),
                        f"multipart/form-data; boundary={boundary}")


def v2_binary_request(model: str, images: list[bytes]) -> bytes:
    """``POST /v2/models/{model}/infer`` with the encoded images as one BYTES tensor in the binary
    tensor extension (each element a 4-byte little-endian length, then the bytes)."""
    data = b"".join(len(b).to_bytes(4, "little") + b for b in images)
    head = json.dumps({"inputs": [{"name": "images", "shape": [len(images)], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(data)}}],
                       "outputs": [{"name": "class_index", "parameters": {"binary_data": False}}]}).encode()
    return http_request("POST", f"/v2/models/{model}/infer", head + data, "application/octet-stream",
                        {"Inference-Header-Content-Length": str(len(head))})


def v2_json_request(model: str, images: list[bytes]) -> bytes:
    """``POST /v2/models/{model}/infer`` with the images base64-encoded in a JSON BYTES tensor."""
    body = json.dumps({"inputs": [{"name": "images", "shape": [len(images)], "datatype": "BYTES",
                                   "data": [base64.b64encode(b).decode() for b in images]}]}).encode()
    return http_request("POST", f"/v2/models/{model}/infer", body, "application/json")


@dataclass
class StepResult:
    """One load step: what the clients got."""

    clients: int
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # answered (200) requests only
    seconds: float = 0.0

    @property
    def answered(self) -> int:
        return self.statuses.get("200", 0)

    @property
    def refused(self) -> int:
        return self.statuses.get("503", 0)

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms, np.float64)
        pct = (lambda q: round(float(np.percentile(lat, q)), 2)) if lat.size else (lambda q: None)
        return {"clients": self.clients, "sent": self.sent, "answered": self.answered, "refused": self.refused,
                "statuses": dict(sorted(self.statuses.items())), "seconds": round(self.seconds, 3),
                "requests_per_s": round(self.answered / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": round(float(lat.max()), 2) if lat.size else None}


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, float]:
    """(status, body, Retry-After seconds or 0)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, retry_s = 0, 0.0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "retry-after" and value.strip().isdigit():
            retry_s = float(value)
    return status, await reader.readexactly(length), retry_s


async def send_one(host: str, port: int, request: bytes, timeout_s: float = 60.0) -> tuple[int, bytes]:
    """One request on a connection of its own: (status, body)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        status, body, _ = await asyncio.wait_for(_read_response(reader), timeout_s)
        return status, body
    finally:
        writer.close()


async def _connect(host: str, port: int, statuses: dict[str, int]):
    """(reader, writer), or (None, None) with the failure counted (the client connects again later)."""
    try:
        return await asyncio.open_connection(host, port)
    except OSError as e:
        statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
        return None, None


async def run_step(host: str, port: int, requests_bytes: list[bytes], *, clients: int, requests: int,
                   seconds: float, check=None, stop: asyncio.Event | None = None) -> StepResult:
    """``clients`` closed-loop connections send ``requests_bytes`` in turn until ``requests`` have
    been sent, ``seconds`` have passed or ``stop`` is set (requests in flight are awaited). A client
    refused with 503 waits its Retry-After (within the step's time) before its next request.
    ``check(i, body)`` (i: the index into ``requests_bytes``) may raise on a wrong answer. Every
    client connects before the step starts (its clock and its first request)."""
    result = StepResult(clients)
    sent = 0

    connections = await asyncio.gather(*(_connect(host, port, result.statuses) for _ in range(clients)))
    deadline = time.monotonic() + seconds

    async def client(k: int) -> None:
        nonlocal sent
        reader, writer = connections[k]
        i = k
        try:
            while sent < requests and time.monotonic() < deadline and not (stop is not None and stop.is_set()):
                sent += 1
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                t0 = time.perf_counter()
                try:
                    writer.write(requests_bytes[i % len(requests_bytes)])
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0) + 30):  # no task per request
                        status, body, retry_s = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
                    key = type(e).__name__
                    result.statuses[key] = result.statuses.get(key, 0) + 1
                    writer.close()
                    reader = writer = None
                    continue
                ms = (time.perf_counter() - t0) * 1000
                result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
                if status == 200:
                    result.latencies_ms.append(ms)
                    if check is not None:
                        check(i % len(requests_bytes), body)
                elif status == 503 or body[:1] != b"{":  # the server closes after a 503; reconnect
                    writer.close()
                    reader = writer = None
                    if retry_s:
                        await asyncio.sleep(min(retry_s, max(deadline - time.monotonic(), 0)))
                i += clients
        finally:
            if writer is not None:
                writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    result.seconds = time.perf_counter() - t0
    result.sent = sent
    return result


def run_async(coro):
    """``asyncio.run(coro)`` on uvloop where it is installed (a cheaper client loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def step_in_process(host: str, port: int, requests_bytes: list[bytes], clients: int, requests: int,
                    seconds: float) -> StepResult:
    """:func:`run_step` to completion (for :meth:`ClientProcess.call`)."""
    return run_async(run_step(host, port, requests_bytes, clients=clients, requests=requests, seconds=seconds))


def _client_process_start() -> None:
    gc.collect()
    gc.freeze()  # the imports (numpy, PIL) stay out of every later collection


class ClientProcess:
    """A process of its own for load-generating clients (spawned, so it inherits no torch heap):
    ``call(fn, *args)`` runs the module-level function ``fn`` there and returns its (picklable)
    result. A context manager; ``close()`` ends the process."""

    def __init__(self):
        self._pool = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_client_process_start)

    def call(self, fn, *args):
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ClientProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
