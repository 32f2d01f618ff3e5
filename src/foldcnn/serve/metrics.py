"""Server metrics for ``GET /metrics``, on ``prometheus_client`` (the ``serve`` extra).

Every :class:`ServeMetrics` owns its own ``CollectorRegistry`` (never the process-wide default), so
two apps in one process keep separate counts and register the same names without a clash. The
client's metrics are thread-safe, so the batcher's worker threads and the event loop may both
record. The ``*_created`` samples are left out of this registry's output only:
``prometheus_client.disable_created_metrics()`` would switch them off for the whole process.
"""

from __future__ import annotations

from collections.abc import Callable

from foldcnn.errors import MissingExtraError

__all__ = ["ServeMetrics", "LATENCY_BUCKETS_S", "FILL_BUCKETS"]

# Seconds: from sub-millisecond (one tiny batch) to seconds (a saturated CPU).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FILL_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class _WithoutCreated:
    """A collector that re-exports another registry's metrics minus their ``*_created`` samples."""

    def __init__(self, inner):
        self.inner = inner

    def collect(self):
        for metric in self.inner.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class ServeMetrics:
    """Everything ``GET /metrics`` reports (names are those served, with the ``_total`` suffix).

    ``queue_images``: called at each scrape for the ``foldcnn_queue_images`` gauge.
    ``registry``: what :meth:`render` serves (a ``CollectorRegistry`` of this instance only);
    ``content_type``: the media type of that text (``CONTENT_TYPE_LATEST``).
    """

    def __init__(self, max_batch: int, queue_images: Callable[[], int] = lambda: 0):
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as e:
            raise MissingExtraError("server metrics need prometheus_client: pip install 'foldcnn[serve]'") from e

        self.max_batch = max_batch
        self.content_type = CONTENT_TYPE_LATEST
        self._raw = CollectorRegistry()
        self.registry = CollectorRegistry()
        self.registry.register(_WithoutCreated(self._raw))
        reg, p = {"registry": self._raw}, "foldcnn_"
        self.requests = Counter(p + "requests", "Classify requests answered, by HTTP status.", ["status"], **reg)
        self.request_errors = Counter(p + "request_errors", "Classify requests that failed, by reason.",
                                      ["reason"], **reg)
        self.latency = Histogram(p + "request_latency_seconds",
                                 "Classify request latency, from the handler start to the response.",
                                 buckets=LATENCY_BUCKETS_S, **reg)
        self.queue_wait = Histogram(p + "batch_queue_wait_seconds",
                                    "Wait of the oldest image of a batch before the batch was sent.",
                                    buckets=LATENCY_BUCKETS_S, **reg)
        self.compute = Histogram(p + "batch_compute_seconds", "Model time of one batch.",
                                 buckets=LATENCY_BUCKETS_S, **reg)
        self.fill = Histogram(p + "batch_fill_ratio", "Images per batch divided by max-batch.",
                              buckets=FILL_BUCKETS, **reg)
        self.batches = Counter(p + "batches", "Batches sent to the model.", **reg)
        self.batch_errors = Counter(p + "batch_errors", "Batches whose model call raised.", **reg)
        self.images = Counter(p + "images", "Real images sent to the model.", **reg)
        self.padded = Counter(p + "padded_images",
                              "Zero images added to fill the last fold of a batch (padding waste).", **reg)
        self.fallback = Counter(p + "fallback_images",
                                "Images of a partial last fold sent through the unfolded fallback model.", **reg)
        self.dropped = Counter(p + "dropped_images", "Queued images dropped unanswered: their client "
                               "went away or another part of their request failed.", **reg)
        Gauge(p + "queue_images", "Images waiting for a batch.", **reg).set_function(lambda: int(queue_images()))
        Gauge(p + "max_batch_images", "Configured max-batch.", **reg).set(max_batch)

    def request(self, status: int, latency_s: float, reason: str | None = None) -> None:
        self.requests.labels(status=str(status)).inc()
        self.latency.observe(latency_s)
        if reason is not None:
            self.request_errors.labels(reason=reason).inc()

    def batch(self, images: int, padded: int, queue_wait_s: float, compute_s: float, ok: bool,
              fallback: int = 0) -> None:
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
        self.dropped.inc(images)

    def value(self, name: str, **labels: str) -> float:
        """One served sample, e.g. ``value("foldcnn_requests_total", status="200")``; 0.0 if never set."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    def render(self) -> str:
        """The Prometheus text format of this instance's registry (``generate_latest``)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode("utf-8")
