"""Server metrics in the Prometheus text exposition format (version 0.0.4), written by hand.

Counters, one gauge and cumulative histograms are enough here; no client library is needed.
All updates take one lock, so the batcher's worker threads and the event loop may both record.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from foldcnn.errors import UsageError

__all__ = ["Counter", "Histogram", "ServeMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from sub-millisecond (one tiny batch) to seconds (a saturated CPU).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FILL_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    esc = (str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, esc)) + "}"


class Counter:
    """A monotone counter, optionally split by label values."""

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help, labels
        self.values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def inc(self, amount: float = 1.0, *label_values: str) -> None:
        key = tuple(str(v) for v in label_values)
        if len(key) != len(self.label_names):
            raise UsageError(f"{self.name} takes labels {self.label_names}, got {key}")
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, *label_values: str) -> float:
        return self.values.get(tuple(str(v) for v in label_values), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_labels(self.label_names, k)} {_fmt(v)}" for k, v in sorted(self.values.items())]
        return lines


class Histogram:
    """A cumulative histogram: ``_bucket{le=...}``, ``_sum`` and ``_count``."""

    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        self.name, self.help = name, help
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self.counts = [0] * len(self.buckets)
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        for i, le in enumerate(self.buckets):
            if value <= le:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for le, c in zip(self.buckets, self.counts):
            running += c
            lines.append(f'{self.name}_bucket{{le="{_fmt(le)}"}} {running}')
        lines += [f"{self.name}_sum {_fmt(self.sum)}", f"{self.name}_count {self.count}"]
        return lines


class ServeMetrics:
    """Everything ``GET /metrics`` reports. Record through the methods (they lock)."""

    def __init__(self, max_batch: int, queue_images: Callable[[], int] = lambda: 0):
        self.max_batch = max_batch
        self.queue_images = queue_images
        self._lock = threading.Lock()
        p = "foldcnn_"
        self.requests = Counter(p + "requests_total", "Classify requests answered, by HTTP status.", ("status",))
        self.request_errors = Counter(p + "request_errors_total",
                                      "Classify requests that failed, by reason.", ("reason",))
        self.latency = Histogram(p + "request_latency_seconds",
                                 "Classify request latency, from the handler start to the response.", LATENCY_BUCKETS_S)
        self.queue_wait = Histogram(p + "batch_queue_wait_seconds",
                                    "Wait of the oldest image of a batch before the batch was sent.",
                                    LATENCY_BUCKETS_S)
        self.compute = Histogram(p + "batch_compute_seconds", "Model time of one batch.", LATENCY_BUCKETS_S)
        self.fill = Histogram(p + "batch_fill_ratio", "Images per batch divided by max-batch.", FILL_BUCKETS)
        self.batches = Counter(p + "batches_total", "Batches sent to the model.")
        self.batch_errors = Counter(p + "batch_errors_total", "Batches whose model call raised.")
        self.images = Counter(p + "images_total", "Real images sent to the model.")
        self.padded = Counter(p + "padded_images_total",
                              "Zero images added to fill the last fold of a batch (padding waste).")
        self.fallback = Counter(p + "fallback_images_total",
                                "Images of a partial last fold sent through the unfolded fallback model.")
        self.dropped = Counter(p + "dropped_images_total", "Queued images dropped unanswered: their client "
                               "went away or another part of their request failed.")

    def request(self, status: int, latency_s: float, reason: str | None = None) -> None:
        with self._lock:
            self.requests.inc(1, str(status))
            self.latency.observe(latency_s)
            if reason is not None:
                self.request_errors.inc(1, reason)

    def batch(self, images: int, padded: int, queue_wait_s: float, compute_s: float, ok: bool,
              fallback: int = 0) -> None:
        with self._lock:
            self.batches.inc()
            self.images.inc(images)
            self.padded.inc(padded)
            self.fallback.inc(fallback)
            self.fill.observe(images / self.max_batch)
            self.queue_wait.observe(queue_wait_s)
            self.compute.observe(compute_s)
            if not ok:
                self.batch_errors.inc()

    def drop(self, images: int) -> None:
        with self._lock:
            self.dropped.inc(images)

    def render(self) -> str:
        with self._lock:
            lines = []
            for m in (self.requests, self.request_errors, self.latency, self.queue_wait, self.compute,
                      self.fill, self.batches, self.batch_errors, self.images, self.padded, self.fallback,
                      self.dropped):
                lines += m.render()
            lines += ["# HELP foldcnn_queue_images Images waiting for a batch.",
                      "# TYPE foldcnn_queue_images gauge", f"foldcnn_queue_images {int(self.queue_images())}",
                      "# HELP foldcnn_max_batch_images Configured max-batch.",
                      "# TYPE foldcnn_max_batch_images gauge", f"foldcnn_max_batch_images {self.max_batch}"]
        return "\n".join(lines) + "\n"
