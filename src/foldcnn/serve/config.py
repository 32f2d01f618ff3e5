"""How `foldcnn serve` batches and what it accepts: :class:`ServeConfig`, one declaration per option.

    config = ServeConfig(PredictOptions(batch_size=256, backend="ort"), max_wait_ms=2)
    app = create_app(Predictor.from_checkpoint("run/checkpoint", config.predict), config)

The model's options are the shared :class:`foldcnn.infer.PredictOptions` (``predict``: batch
size, backend, precision, partial folds...), not repeated here; the server's own fields are
declared with :func:`foldcnn.options.option`, and `foldcnn serve` generates its flags from them
(foldcnn.cli.options.add_options) as `foldcnn predict` does from PredictOptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foldcnn.errors import UsageError
from foldcnn.infer.options import PredictOptions
from foldcnn.options import option
from foldcnn.serve.isolation import SERVE_ISOLATION
from foldcnn.serve.validation import ImageLimits

__all__ = ["ServeConfig"]


@dataclass(frozen=True)
class ServeConfig:
    """How the server batches and what it accepts (each field's help says what it does).

    predict: the model's options (``batch_size``: images per model call, rounded down to a
    multiple of the fold; ``partial``: a batch's partial last fold padded with zeros or sent
    through the unfolded fallback); api_key: required as ``Authorization: Bearer KEY`` or
    ``X-API-Key: KEY`` when set (one key, or several: a tuple, one per client or tenant);
    isolation "auto": "none" when the model's answers cannot depend on fold-mates (fold 1, or
    trained with cross-slot decay inf), "request" otherwise (foldcnn.serve.batcher);
    limits: what one request may carry; decode_pixels: pixels of large images decoding at once,
    server-wide (default: limits.max_pixels, one largest image); request_decode_pixels: pixels
    of one request decoding at once (default: limits.max_pixels).
    """

    predict: PredictOptions = field(default_factory=PredictOptions, metadata={"cli": False})
    max_wait_ms: float = option(5.0, "longest an image waits for its batch to fill (the latency budget of batching)")
    max_queue_ms: float = option(5000.0, "the queue's deadline: a request gets 503 + Retry-After when the work "
                                         "already admitted would not finish within it (estimated from measured "
                                         "decode and model rates), or when it is still waiting for a batch this "
                                         "long after it arrived")
    max_queue_images: int | None = option(None, "queued images before new requests get 503 (a memory bound; "
                                                "default 16 x --batch-size)")
    replicas: int = option(1, "batches computed at once, each by its own copy of the model (1 is best on a small CPU)")
    api_key: str | tuple[str, ...] | None = option(None, cli=False)
    isolation: str = option("auto", "who may share a fold: auto = none for a model whose answers cannot depend "
                                    "on fold-mates (fold 1, or trained with --cross-slot-decay inf, as its "
                                    "config.json records), request otherwise; request = only images of one "
                                    "request (no client's images change another's answers; padding costs "
                                    "throughput on small requests), key = only images sent with the same API "
                                    "key, none = anyone (fullest folds; answers may depend on other clients)",
                            choices=("auto", "request", "key", "none"))
    limits: ImageLimits = field(default_factory=ImageLimits, metadata={"cli": False})
    body_memory_bytes: int | None = option(None, "bytes of request bodies held at once, server-wide (default 4 x "
                                                 "--max-body-bytes); past it requests get 503 with Retry-After")
    body_timeout_s: float = option(30.0, "longest a request body may take to arrive (408 after it)")
    decode_threads: int = option(2, "the image-decoding pool's threads (large images also share a budget of "
                                    "--max-pixels pixels decoding at once, so small requests are not stuck behind "
                                    "them)")
    decode_pixels: int | None = option(None, cli=False)
    request_decode_pixels: int | None = option(None, cli=False)
    model_name: str = option("foldcnn", "the model's name in the KServe v2 endpoints (/v2/models/NAME/infer)")

    @property
    def batch_size(self) -> int:
        return self.predict.batch_size

    @property
    def partial(self) -> str:
        return self.predict.partial_mode

    def __post_init__(self):
        if not isinstance(self.predict, PredictOptions):
            raise UsageError(f"predict must be a PredictOptions, got {type(self.predict).__name__}")
        for name, lo in (("replicas", 1), ("body_memory_bytes", 1), ("decode_threads", 1), ("decode_pixels", 1),
                         ("request_decode_pixels", 1)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                raise UsageError(f"{name} must be an int >= {lo}, got {v!r}")
        if not self.max_wait_ms >= 0:
            raise UsageError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if not self.body_timeout_s > 0:
            raise UsageError(f"body_timeout_s must be > 0 seconds, got {self.body_timeout_s!r}")
        if not self.max_queue_ms > 0:
            raise UsageError(f"max_queue_ms must be > 0, got {self.max_queue_ms!r}")
        if not (self.model_name and all(ch.isalnum() or ch in "-_." for ch in self.model_name)):
            raise UsageError(f"the model name must be letters, digits, '-', '_' or '.', got {self.model_name!r}")
        if self.isolation not in SERVE_ISOLATION:
            raise UsageError(f"isolation must be one of {', '.join(SERVE_ISOLATION)}, got {self.isolation!r}")
        self._check_api_key()

    def _check_api_key(self) -> None:
        if self.isolation == "key" and self.api_key is None:
            raise UsageError("isolation 'key' folds together only images sent with the same API key; set one or "
                             "more API keys (--api-key) or choose isolation 'request'")
        keys = (self.api_key,) if isinstance(self.api_key, str) else tuple(self.api_key or ())
        if self.api_key is not None and not keys:
            raise UsageError("api_key is an empty list; give at least one key or None")
        if any(not (key and all("!" <= ch <= "~" for ch in key)) for key in keys):
            # An empty key would accept an empty header; a header value is ASCII, so any other key never matches.
            raise UsageError("the API key (--api-key or FOLDCNN_API_KEY) must be non-empty printable ASCII without "
                             "spaces, e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
