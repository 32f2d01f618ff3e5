"""The HTTP app: ``POST /v1/classify``, ``GET /healthz``, ``GET /metrics`` (FastAPI).

    app = create_app(Predictor.from_checkpoint("run/checkpoint", batch_size=1024), ServeConfig())
    uvicorn.run(app, host="127.0.0.1", port=8000)        # what `foldcnn serve` does

Why FastAPI + uvicorn and not Ray Serve: the model is small and one machine serves it, so one
process with one asyncio loop and a worker thread for the model is all the batching needs. Ray
Serve's dynamic batching lives in a cluster runtime (a head process, actors, an object store)
that adds a hop and milliseconds of latency per request and a heavy dependency, for scaling out
we do not need; run several `foldcnn serve` processes behind a load balancer for that instead.

Request bodies (one image or many, answered in order):
  * raw bytes with ``Content-Type: image/*`` (or application/octet-stream): one image;
  * ``multipart/form-data``: every file part is an image, in the order sent;
  * ``application/json``: ``{"images": ["<base64>", ...]}``.
Answer: ``{"results": [{"class_index", "class_name", "confidence"}, ...]}``; errors are
``{"error": "<one sentence>"}`` with a 4xx status for bad input, 401 for a missing or wrong API
key, 500 when the model failed on the batch that held the request, 503 while shutting down.
"""

# No `from __future__ import annotations`: FastAPI must see the real Request class in the handlers'
# signatures, and it is imported inside create_app (fastapi is optional).
import asyncio
import contextlib
import hmac
import logging
import queue
import time
from dataclasses import dataclass, field

from foldcnn.errors import UsageError
from foldcnn.serve.batcher import BatcherClosed, BatchFailed, FoldBatcher, QueueFull
from foldcnn.serve.metrics import CONTENT_TYPE, ServeMetrics
from foldcnn.serve.validation import ImageLimits, RequestError, decode_images, split_json_images

__all__ = ["ServeConfig", "create_app"]

_log = logging.getLogger("foldcnn.serve")
_REASONS = {400: "bad_request", 401: "unauthorized", 413: "too_large", 415: "unsupported_media_type",
            499: "client_gone", 500: "model_error", 503: "unavailable"}


@dataclass(frozen=True)
class ServeConfig:
    """How the server batches and what it accepts.

    max_batch: images per model call (rounded down to a multiple of the fold);
    max_wait_ms: the longest the oldest queued image waits for a batch to fill;
    workers: batches computed at once (threads); max_queue_images: queued images before 503;
    api_key: required as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` when set;
    partial: how the predictor treats a batch's partial last fold, "pad" (zeros, counted as
    padding waste) or "fallback" (its images go through an unfolded model; Predictor partial=).
    """

    max_batch: int = 1024
    max_wait_ms: float = 5.0
    workers: int = 1
    max_queue_images: int | None = None
    api_key: str | None = None
    partial: str = "pad"
    limits: ImageLimits = field(default_factory=ImageLimits)

    def __post_init__(self):
        key = self.api_key
        if key is not None and not (key and all("!" <= ch <= "~" for ch in key)):
            # An empty key would accept an empty header; a header value is ASCII, so any other key never matches.
            raise UsageError("the API key (--api-key or FOLDCNN_API_KEY) must be non-empty printable ASCII without "
                             "spaces, e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(32))'")


def _authorized(headers, api_key: str | None) -> bool:
    if api_key is None:
        return True
    given = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), api_key.encode())


async def _read_body(request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body has {int(declared):,} bytes, over the limit of {limit:,}; "
                                f"send fewer or smaller images per request")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over the limit of {limit:,} bytes; send fewer or smaller "
                                    f"images per request")
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_blobs(request, body: bytes, limits: ImageLimits) -> list[bytes]:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def replay():
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=limits.max_images, max_fields=limits.max_images)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        status = 413 if "too many" in str(e).lower() else 400
        raise RequestError(status, f"the multipart body could not be read ({e}); send each image as a "
                                   f"file part, at most {limits.max_images} of them") from None
    blobs = []
    try:
        for name, value in form.multi_items():
            if not isinstance(value, UploadFile):
                raise RequestError(400, f"multipart field {name!r} is not a file; send every image as a "
                                        f"file part (e.g. curl -F files=@image.png)")
            blobs.append(await value.read())
    finally:
        await form.close()
    return blobs


async def _request_blobs(request, limits: ImageLimits) -> list[bytes]:
    """The encoded images of a request, by Content-Type."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (ctype.startswith("image/") or ctype in ("application/octet-stream", "application/json",
                                                     "multipart/form-data")):
        raise RequestError(415, f"Content-Type {ctype or '(none)'} is not accepted; send image/* bytes, "
                                f"multipart/form-data files or application/json {{\"images\": [base64...]}}")
    body = await _read_body(request, limits.max_body_bytes)
    if ctype == "application/json":
        return split_json_images(body)
    if ctype == "multipart/form-data":
        return await _multipart_blobs(request, body, limits)
    return [body]


async def _until_disconnect(request) -> None:
    """Returns when the client goes away (the body has been read, so only disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _pooled(predictors: list):
    """One predict function over several predictors: each call borrows one (they are not thread-safe)."""
    if len(predictors) == 1:
        return predictors[0].predict_arrays
    pool: queue.SimpleQueue = queue.SimpleQueue()
    for p in predictors:
        pool.put(p)

    def predict_arrays(images):
        p = pool.get()
        try:
            return p.predict_arrays(images)
        finally:
            pool.put(p)

    return predict_arrays


def create_app(predictor, config: ServeConfig | None = None):
    """A FastAPI app serving ``predictor`` (anything with ``predict_arrays``, ``fold``,
    ``class_names`` and ``input_shape`` (C, H, W), such as :class:`foldcnn.infer.Predictor`),
    or a list of equal predictors, one per worker thread (``config.workers``).

    ``app.state.batcher`` and ``app.state.metrics`` are exposed for tests and embedding.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    config = config or ServeConfig()
    limits = config.limits
    predictors = list(predictor) if isinstance(predictor, (list, tuple)) else [predictor]
    first = predictors[0]
    input_shape = tuple(int(v) for v in first.input_shape)
    class_names = list(first.class_names)
    for p in predictors[1:]:
        if (p.fold, tuple(p.input_shape), list(p.class_names)) != (first.fold, input_shape, class_names):
            raise UsageError("all predictors must serve the same model (fold, input shape and classes differ)")
    if config.workers > len(predictors):
        raise UsageError(f"workers={config.workers} needs {config.workers} predictors, one per worker thread "
                         f"(a Predictor is not thread-safe); got {len(predictors)}")
    batcher = FoldBatcher(_pooled(predictors), fold=int(first.fold), max_batch=config.max_batch,
                          max_wait_ms=config.max_wait_ms, workers=config.workers,
                          max_queue_images=config.max_queue_images, partial=config.partial)
    metrics = ServeMetrics(batcher.max_batch, queue_images=lambda: batcher.queued_images)
    batcher.metrics = metrics

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.close(drain=True)  # uvicorn has already let in-flight requests finish

    app = FastAPI(title="foldcnn", summary="Folded CNN image classification", lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.config = batcher, metrics, config

    def error(status: int, message: str) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def unauthorized() -> JSONResponse:
        return error(401, "missing or wrong API key; send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")

    @app.post("/v1/classify")
    async def classify(request: Request):
        t0 = time.perf_counter()
        status = 200
        try:
            if not _authorized(request.headers, config.api_key):
                status = 401
                return unauthorized()
            blobs = await _request_blobs(request, limits)
            images = await asyncio.to_thread(decode_images, blobs, input_shape, limits)
            job = asyncio.ensure_future(batcher.submit(images))
            gone = asyncio.ensure_future(_until_disconnect(request))
            try:
                await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
                if not job.done():  # client went away: drop what is not batched yet, answer nobody
                    job.cancel()
                    await asyncio.wait({job})  # let the cancellation land (never raises)
            if job.cancelled():
                status = 499
                return error(499, "the client closed the connection before the answer was ready")
            indices, probs = job.result()
            results = [{"class_index": int(k), "class_name": class_names[k], "confidence": float(probs[i, k])}
                       for i, k in enumerate(indices.tolist())]
            return JSONResponse({"results": results})
        except RequestError as e:
            status = e.status
            return error(e.status, e.message)
        except BatchFailed as e:
            status = 500
            return error(500, str(e))
        except (BatcherClosed, QueueFull) as e:
            status = 503
            return JSONResponse({"error": str(e)}, status_code=503, headers={"Retry-After": "1"})
        except Exception as e:  # a bug here must not take the server down; log it, answer 500
            status = 500
            _log.exception("classify failed")
            return error(500, f"internal server error ({type(e).__name__}); the server log has the details")
        finally:
            metrics.request(status, time.perf_counter() - t0, _REASONS.get(status, "other") if status != 200 else None)

    @app.get("/healthz")
    async def healthz():
        body = {"status": "draining" if batcher.closing else "ok", "fold": batcher.fold,
                "input_shape": list(input_shape), "num_classes": len(class_names),
                "max_batch": batcher.max_batch, "max_wait_ms": config.max_wait_ms,
                "queue_images": batcher.queued_images}
        return JSONResponse(body, status_code=503 if batcher.closing else 200)

    @app.get("/metrics")
    async def prometheus(request: Request):
        if not _authorized(request.headers, config.api_key):
            return unauthorized()
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    return app
