"""The HTTP app: ``POST /v1/classify``, the KServe v2 endpoints, ``GET /healthz``, ``GET /metrics``.

    config = ServeConfig(PredictOptions(batch_size=1024), max_wait_ms=5)
    app = create_app(Predictor.from_checkpoint("run/checkpoint", config.predict.replace(workers=0)), config)
    uvicorn.run(app, host="127.0.0.1", port=8000)        # what `foldcnn serve` does

One process, one asyncio loop, the model in a worker thread: the model is small, so batching
needs nothing more; run several `foldcnn serve` processes behind a load balancer to scale out.

``POST /v1/classify`` bodies (one image or many, answered in order):
  * raw bytes with ``Content-Type: image/*`` (or application/octet-stream): one image;
  * ``multipart/form-data``: every file part is an image, in the order sent;
  * ``application/json``: ``{"images": ["<base64>", ...]}``.
Answer: ``{"results": [row, ...]}``, one row per image in the order sent, in the schema every
writer shares (foldcnn.infer.results.result_row: index (position in the request), source and
frame (null), class_name, class_index, confidence rounded to 6 decimals).

KServe v2 / Open Inference Protocol (:mod:`foldcnn.serve.v2`): ``POST /v2/models/{name}/infer``
(JSON or the binary tensor extension), ``GET /v2/models/{name}`` (metadata),
``GET /v2/models/{name}/ready``, ``GET /v2/health/ready``, ``GET /v2/health/live``, ``GET /v2``.

Errors are ``{"error": "<one sentence>"}``: a 4xx for bad input (404 for another model name),
401 for a missing or wrong API key, 408 for a body that did not arrive within ``body_timeout_s``,
500 when the model failed on the batch that held the request, 503 (with ``Retry-After``) when
the work already admitted cannot finish within ``max_queue_ms`` (estimated from the measured
decode and model rates), when the request waited past that deadline unbatched, when the bytes of
bodies held server-wide pass ``body_memory_bytes``, and while shutting down.

Bounded work per client. A body is read as a stream and refused (413) as soon as it passes its
limit (``max_image_bytes`` for a raw image, ``max_body_bytes`` otherwise), whether or not it
declared a Content-Length; images decode in a pool of their own metered in pixels
(:mod:`foldcnn.serve.decoding`), so a request of heavy images waits for its own turn and one
small image from another client stays fast. A client that goes away before its answer is
counted as ``client_gone`` (status 499 in the metrics).
"""

# No `from __future__ import annotations`: FastAPI must see the real Request class in the handlers'
# signatures, and it is imported inside create_app (fastapi is optional).
import asyncio
import contextlib
import gc
import hmac
import logging
import math
import queue
import time

import numpy as np

from foldcnn.errors import UsageError
from foldcnn.infer.results import result_row
from foldcnn.serve.batcher import BatcherClosed, BatchFailed, FoldBatcher, QueueFull
from foldcnn.serve.config import ServeConfig
from foldcnn.serve.decoding import DecodePool
from foldcnn.serve.isolation import (
    predictor_fold_invariant,
    probe_fold_invariance,
    resolve_isolation,
)
from foldcnn.serve.metrics import ServeMetrics
from foldcnn.serve.v2 import HEADER_LENGTH, infer_response, model_metadata, parse_infer_request
from foldcnn.serve.validation import (
    ImageLimits,
    RequestError,
    check_image_count,
    decode_image,
    image_pixels,
    split_json_images,
)

__all__ = ["ServeConfig", "create_app"]

_log = logging.getLogger("foldcnn.serve")
_REASONS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 408: "body_timeout", 413: "too_large",
            415: "unsupported_media_type", 499: "client_gone", 500: "model_error", 503: "unavailable"}
_POLL_S = 0.25  # how often a body read looks at its deadline and at shutdown
_INLINE_PARSE_BYTES = 1 << 16  # v2 bodies larger than this are parsed on the decoding pool


class ClientGone(Exception):
    """The client closed the connection before its request was answered."""


class _BodyMemory:
    """Bytes of request bodies held at once, server-wide (event loop only): past ``limit`` a
    request gets 503 instead of more memory. ``with meter.held() as take: take(n)``."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    @contextlib.contextmanager
    def held(self):
        mine = 0

        def take(n: int) -> None:
            nonlocal mine
            if self.used + n > self.limit:
                raise RequestError(503, f"the server holds {self.used:,} bytes of request bodies, its limit; "
                                        "retry in a moment")
            self.used += n
            mine += n

        try:
            yield take
        finally:
            self.used -= mine


def _client_key(headers, api_key: str | tuple[str, ...] | None) -> int | None:
    """Which configured key the request presented (its position), 0 when no key is required, or
    None when it presented none of them. Every key is compared, in constant time each."""
    if api_key is None:
        return 0
    keys = (api_key,) if isinstance(api_key, str) else api_key
    given = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    if given is None:
        return None
    matches = [hmac.compare_digest(given.encode(), k.encode()) for k in keys]
    return matches.index(True) if any(matches) else None


def _authorized(headers, api_key) -> bool:
    return _client_key(headers, api_key) is not None


async def _read_body(request, limit: int, timeout_s: float, draining, take) -> bytes:
    """The body, read as it arrives: 413 as soon as it passes ``limit``, 408 past ``timeout_s``,
    503 once the server starts shutting down or ``take(n)`` (the server-wide body memory) refuses,
    :class:`ClientGone` if the client disconnects."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body has {int(declared):,} bytes, over the limit of {limit:,}; "
                                f"send fewer or smaller images per request")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    body = bytearray()
    while True:
        if draining():
            raise RequestError(503, "the server is shutting down; retry the request (on another instance)")
        left = deadline - loop.time()
        if left <= 0:
            raise RequestError(408, f"the body did not arrive within {timeout_s:g} s; send it at once")
        try:  # receive() is cancel-safe: a timeout here loses no data
            message = await asyncio.wait_for(request.receive(), min(left, _POLL_S))
        except TimeoutError:
            continue
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        take(len(chunk))
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"the body is over the limit of {limit:,} bytes; send fewer or smaller "
                                    f"images per request")
        if not message.get("more_body", False):
            return body  # a bytearray: no second copy of up to max_body_bytes


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


async def _request_blobs(request, config: "ServeConfig", decoder: DecodePool, draining, take) -> list[bytes]:
    """The encoded images of a request, by Content-Type."""
    limits = config.limits
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (ctype.startswith("image/") or ctype in ("application/octet-stream", "application/json",
                                                     "multipart/form-data")):
        raise RequestError(415, f"Content-Type {ctype or '(none)'} is not accepted; send image/* bytes, "
                                f"multipart/form-data files or application/json {{\"images\": [base64...]}}")
    raw = ctype not in ("application/json", "multipart/form-data")  # one image: its own limit applies
    limit = min(limits.max_image_bytes, limits.max_body_bytes) if raw else limits.max_body_bytes
    body = await _read_body(request, limit, config.body_timeout_s, draining, take)
    if ctype == "application/json":
        return await decoder.call(split_json_images, body)  # parsing 64 MiB must not stall the event loop
    if ctype == "multipart/form-data":
        return await _multipart_blobs(request, bytes(body), limits)
    return [body]


async def _decode_request(blobs: list[bytes], input_shape, limits: ImageLimits, decoder: DecodePool,
                          admit) -> np.ndarray:
    """Encoded images -> uint8 (N, C, H, W) through the metered pool; the first bad image fails all.
    ``admit(n, ahead_s)`` may refuse the request once its images' count and sizes are known."""
    check_image_count(len(blobs), limits)
    where = (lambda i: "the image") if len(blobs) == 1 else (lambda i: f"image {i}")
    pixels = [image_pixels(b, limits, where(i)) for i, b in enumerate(blobs)]  # headers only: cheap
    admit(len(blobs), decoder.wait_estimate_s() if any(decoder.is_heavy(p) for p in pixels) else 0.0)
    images = await decoder.map(lambda i: decode_image(blobs[i], input_shape, limits, where(i)), pixels)
    return np.stack(images)


async def _until_disconnect(request) -> None:
    """Returns when the client goes away (the body has been read, so only disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def freeze_heap() -> None:
    """Move every object alive now (modules, the model, torch's and FastAPI's state: some 200,000
    objects) out of the cyclic garbage collector's reach (:func:`gc.freeze`). Without it each
    full collection walks them all and stops the event loop for a tenth of a second or more,
    every few hundred one-image requests under load: every request in flight waits it out, the
    whole p99 (docs/serving.md). Objects made later (requests, batches) are collected as usual."""
    gc.collect()
    gc.freeze()


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


def create_app(predictor, config: ServeConfig | None = None, *, fold_invariant: bool | None = None):
    """A FastAPI app serving ``predictor`` (anything with ``predict_arrays``, ``fold``,
    ``class_names`` and ``input_shape`` (C, H, W), such as :class:`foldcnn.infer.Predictor`),
    or a list of equal predictors, one per replica thread (``config.replicas``).

    ``fold_invariant``: whether the model's answers cannot depend on fold-mates, for
    ``isolation="auto"`` (default: found from the predictor, see foldcnn.serve.isolation).
    ``app.state.batcher`` and ``app.state.metrics`` are exposed for tests and embedding.
    """
    from fastapi import FastAPI

    config = config or ServeConfig()
    predictors = _same_model(predictor, config)
    first = predictors[0]
    input_shape = tuple(int(v) for v in first.input_shape)
    isolation = _isolation(first, config, fold_invariant, input_shape)
    batcher = FoldBatcher(_pooled(predictors), fold=int(first.fold), max_batch=config.batch_size,
                          max_wait_ms=config.max_wait_ms, workers=config.replicas,
                          max_queue_images=config.max_queue_images, partial=config.partial,
                          isolation=isolation, max_queue_ms=config.max_queue_ms)
    metrics = ServeMetrics(batcher.max_batch, queue_images=lambda: batcher.queued_images)
    batcher.metrics = metrics
    decoder = DecodePool(config.decode_threads, config.decode_pixels or config.limits.max_pixels,
                         config.request_decode_pixels or config.limits.max_pixels)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        freeze_heap()  # the model is loaded (and warmed up by `foldcnn serve`): start-up objects stay
        yield
        app.state.draining = True
        await batcher.close(drain=True)  # uvicorn has already let in-flight requests finish
        decoder.close()

    app = FastAPI(title="foldcnn", summary="Folded CNN image classification", lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.config = batcher, metrics, config
    # Set by whoever runs the app when shutdown begins (`foldcnn serve` does it on SIGTERM/SIGINT),
    # before uvicorn waits for in-flight requests: body reads then stop with a JSON 503.
    app.state.draining = False
    app.state.decoder = decoder
    app.state.isolation = isolation
    service = _Service(app, config, input_shape, list(first.class_names))
    _add_v1_routes(app, service)
    _add_v2_routes(app, service)
    return app


def _same_model(predictor, config: ServeConfig) -> list:
    """The predictors (one, or one per replica thread), checked to serve one model."""
    predictors = list(predictor) if isinstance(predictor, (list, tuple)) else [predictor]
    first = predictors[0]
    input_shape, class_names = tuple(int(v) for v in first.input_shape), list(first.class_names)
    for p in predictors[1:]:
        if (p.fold, tuple(p.input_shape), list(p.class_names)) != (first.fold, input_shape, class_names):
            raise UsageError("all predictors must serve the same model (fold, input shape and classes differ)")
    if config.replicas > len(predictors):
        raise UsageError(f"replicas={config.replicas} needs {config.replicas} predictors, one per replica thread "
                         f"(a Predictor is not thread-safe); got {len(predictors)}")
    return predictors


def _isolation(first, config: ServeConfig, fold_invariant: bool | None, input_shape) -> str:
    """The isolation to serve with: config.isolation, with "auto" resolved (probing the model)."""
    invariant = False
    if config.isolation == "auto":
        invariant = predictor_fold_invariant(first) if fold_invariant is None or int(first.fold) == 1 \
            else bool(fold_invariant)
        if invariant and int(first.fold) > 1 and not probe_fold_invariance(first.predict_arrays, int(first.fold),
                                                                           input_shape):
            _log.warning("the checkpoint records cross-slot decay inf, but an image's answer changed with its "
                         "fold-mates on this engine; serving with request isolation")
            invariant = False
    return resolve_isolation(config.isolation, invariant)


class _Service:
    """What every endpoint shares: the app's batcher, metrics and decoding pool, the body meter,
    the model's input shape and classes; and the plumbing of a request (auth, admission, errors)."""

    def __init__(self, app, config: ServeConfig, input_shape: tuple[int, int, int], class_names: list[str]):
        from fastapi.responses import JSONResponse, Response

        self.app, self.config, self.limits, self.isolation = app, config, config.limits, app.state.isolation
        self.batcher, self.metrics, self.decoder = app.state.batcher, app.state.metrics, app.state.decoder
        self.input_shape, self.class_names = input_shape, class_names
        self.body_memory = _BodyMemory(config.body_memory_bytes or 4 * config.limits.max_body_bytes)
        self._json_response, self._response = JSONResponse, Response

    def draining(self) -> bool:
        return self.app.state.draining or self.batcher.closing

    def error(self, status: int, message: str, close: bool = False, retry_after_s: float = 1.0):
        """The JSON error; ``close`` when the rest of the body may still be coming (do not read it)."""
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        if close:
            headers["Connection"] = "close"
        if status == 503:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
        return self._json_response({"error": message}, status_code=status, headers=headers)

    def unauthorized(self):
        return self.error(401, "missing or wrong API key; send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")

    def authorized(self, request) -> bool:
        return _authorized(request.headers, self.config.api_key)

    def admit(self, n: int, ahead_s: float = 0.0) -> None:
        """Refuse (QueueFull) when the work admitted before these images cannot finish in time."""
        if self.draining():
            raise BatcherClosed("the server is shutting down; retry the request (on another instance)")
        self.batcher.check_admission(n, ahead_s)

    async def read_body(self, request, limit: int) -> bytearray:
        with self.body_memory.held() as take:
            return await _read_body(request, limit, self.config.body_timeout_s, self.draining, take)

    async def classify_images(self, request, client: int, images: np.ndarray):
        """Queue the images; their (indices, probabilities), or ClientGone if the client leaves."""
        # The queue's deadline runs from here: the request's own decoding is not queue time.
        job = asyncio.ensure_future(self.batcher.submit(images, key=client))
        gone = asyncio.ensure_future(_until_disconnect(request))
        try:
            await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not job.done():  # client went away: drop what is not batched yet, answer nobody
                job.cancel()
                await asyncio.wait({job})  # let the cancellation land (never raises)
        if job.cancelled():
            raise ClientGone()
        return job.result()

    async def answer(self, request, work):
        """Run ``work(client)`` (auth first) and turn every failure into one JSON error."""
        t0 = time.perf_counter()
        status = 200
        try:
            client = _client_key(request.headers, self.config.api_key)
            if client is None:
                status = 401
                return self.unauthorized()
            self.admit(0)  # the queue alone is past its deadline: refuse before reading the body
            return await work(client)
        except Exception as e:
            status, response = self._failure(e)
            return response
        except asyncio.CancelledError:
            if not self.draining():
                raise
            # uvicorn's graceful timeout ran out: answer the documented JSON 503, not its plain-text 500
            status = 503
            return self.error(503, "the server shut down before the answer was ready; retry the request")
        finally:
            reason = _REASONS.get(status, "other") if status != 200 else None
            self.metrics.request(status, time.perf_counter() - t0, reason)

    def _failure(self, e: Exception):
        """(status, the JSON error) for what a request's work raised."""
        if isinstance(e, RequestError):
            return e.status, self.error(e.status, e.message, close=e.status in (408, 413, 503))  # may come mid-body
        if isinstance(e, ClientGone):  # nobody to answer; not an error of the server (no traceback)
            return 499, self.error(499, "the client closed the connection before the answer was ready", close=True)
        if isinstance(e, BatchFailed):
            return 500, self.error(500, str(e))
        if isinstance(e, QueueFull):
            return 503, self.error(503, str(e), close=True, retry_after_s=e.retry_after_s)
        if isinstance(e, BatcherClosed):
            return 503, self.error(503, str(e), close=True)
        _log.exception("request failed", exc_info=e)  # a bug here must not take the server down; answer 500
        return 500, self.error(500, f"internal server error ({type(e).__name__}); the server log has the details")


async def _classify(service: _Service, request, client: int):
    """``POST /v1/classify`` once authorized: the images of the body, classified, as result rows."""
    with service.body_memory.held() as take:
        blobs = await _request_blobs(request, service.config, service.decoder, service.draining, take)
        images = await _decode_request(blobs, service.input_shape, service.limits, service.decoder, service.admit)
    indices, probs = await service.classify_images(request, client, images)
    names = service.class_names
    results = [result_row(i, None, None, names[k], k, probs[i, k]) for i, k in enumerate(indices.tolist())]
    return service._json_response({"results": results})


async def _v2_infer(service: _Service, request, client: int):
    """``POST /v2/models/{name}/infer`` once authorized: the tensors in, the outputs asked for out."""
    input_shape, limits, decoder = service.input_shape, service.limits, service.decoder
    body = await service.read_body(request, limits.max_body_bytes)
    header = request.headers.get(HEADER_LENGTH)
    if len(body) > _INLINE_PARSE_BYTES:  # parsing megabytes must not stall the event loop
        req = await decoder.call(parse_infer_request, bytes(body), header, input_shape)
    else:
        req = parse_infer_request(bytes(body), header, input_shape)
    del body
    if req.blobs is not None:
        images = await _decode_request(req.blobs, input_shape, limits, decoder, service.admit)
    else:
        check_image_count(req.count, limits)
        service.admit(req.count)
        images = req.pixels
    indices, probs = await service.classify_images(request, client, images)
    content, headers = infer_response(req, service.config.model_name, indices, probs, service.class_names)
    return service._response(content, headers=headers)


def _add_v1_routes(app, service: _Service) -> None:
    """``POST /v1/classify``, ``GET /healthz``, ``GET /metrics``."""
    from fastapi import Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    batcher, config = service.batcher, service.config

    @app.post("/v1/classify")
    async def classify(request: Request):
        return await service.answer(request, lambda client: _classify(service, request, client))

    @app.get("/healthz")
    async def healthz():
        draining = service.draining()
        body = {"status": "draining" if draining else "ok", "fold": batcher.fold,
                "input_shape": list(service.input_shape), "num_classes": len(service.class_names),
                "batch_size": batcher.max_batch, "max_wait_ms": config.max_wait_ms,
                "isolation": service.isolation, "queue_images": batcher.queued_images,
                "queue_wait_estimate_ms": round(batcher.wait_estimate_s() * 1000, 1)}
        return JSONResponse(body, status_code=503 if draining else 200)

    @app.get("/metrics")
    async def prometheus(request: Request):
        if not service.authorized(request):
            return service.unauthorized()
        return PlainTextResponse(service.metrics.render(), media_type=service.metrics.content_type)


def _add_v2_routes(app, service: _Service) -> None:
    """The KServe v2 / Open Inference Protocol endpoints (foldcnn.serve.v2)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    name = service.config.model_name

    def unknown_model(model: str):
        return service.error(404, f"no model {model!r} here; this server serves {name!r}")

    def readiness(body: dict):
        return JSONResponse(body, status_code=503 if service.draining() else 200)

    @app.get("/v2/health/live")
    async def v2_live():
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready")
    async def v2_ready():
        return readiness({"ready": not service.draining()})

    @app.get("/v2")
    async def v2_server():
        return JSONResponse({"name": "foldcnn", "version": _version(), "extensions": ["binary_tensor_data"]})

    @app.get("/v2/models/{model}")
    async def v2_model(model: str, request: Request):
        if not service.authorized(request):
            return service.unauthorized()
        if model != name:
            return unknown_model(model)
        return JSONResponse(model_metadata(name, service.input_shape, len(service.class_names)))

    @app.get("/v2/models/{model}/ready")
    async def v2_model_ready(model: str):
        return unknown_model(model) if model != name else readiness({"name": name, "ready": not service.draining()})

    @app.post("/v2/models/{model}/infer")
    @app.post("/v2/models/{model}/versions/{version}/infer")
    async def v2_infer(model: str, request: Request, version: str = "1"):
        if model != name:
            return unknown_model(model)
        if version != "1":
            return service.error(404, f"model {name!r} has one version, '1'; got {version!r}")
        return await service.answer(request, lambda client: _v2_infer(service, request, client))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("foldcnn")
    except PackageNotFoundError:
        return "unknown"
