"""`foldcnn serve`: an HTTP server with fold-aware dynamic batching (foldcnn.serve)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from foldcnn.cli.common import CLIError
from foldcnn.cli.options import add_predict_options, deprecated_alias, predict_options

# PredictOptions the server does not take as flags, and why (foldcnn.cli.options).
UNSUPPORTED = {
    "stride": "the server classifies images, not videos",
    "on_error": "the server answers each unreadable image with a 4xx naming it",
    "workers": "the server decodes requests in its own pool (--decode-threads); --workers is, for one release, "
               "the deprecated name of --replicas",
    "decoders": "the server decodes requests in its own pool",
    "keyframes": "requests carry images, not videos",
    "resize_mode": "the server resizes bilinearly",
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve_config(args: argparse.Namespace):
    """The ServeConfig the flags describe (also used by experiments/published/load_test.py)."""
    from foldcnn.serve import ImageLimits, ServeConfig

    # --api-key may be repeated (one key per tenant); the environment holds one key.
    keys = args.api_key if args.api_key is not None else [os.environ.get("FOLDCNN_API_KEY")]
    api_key = keys[0] if len(keys) == 1 else tuple(keys)
    try:
        limits = ImageLimits(max_image_bytes=args.max_image_bytes, max_body_bytes=args.max_body_bytes,
                             max_pixels=args.max_pixels, max_images=args.max_images, resize=args.resize)
    except ValueError as e:
        raise CLIError(str(e).replace("ImageLimits.", "--").replace("_", "-")) from None
    options = predict_options(args)
    for flag, v, lo in (("--replicas", args.replicas, 1), ("--max-wait-ms", args.max_wait_ms, 0)):
        if v < lo:
            raise CLIError(f"{flag} must be >= {lo}, got {v}")
    return ServeConfig(max_batch=options.batch_size, max_wait_ms=args.max_wait_ms, workers=args.replicas,
                       max_queue_images=args.max_queue_images, api_key=api_key, partial=options.partial_mode,
                       isolation=args.isolation,
                       limits=limits,
                       **_bounds_config(args))


def _bounds_config(args: argparse.Namespace) -> dict:
    """The per-client bounds of docs/serving.md (bodies at once, body timeout, decoding threads)."""
    for flag, v in (("--max-bodies", args.max_bodies), ("--decode-threads", args.decode_threads)):
        if v < 1:
            raise CLIError(f"{flag} must be >= 1, got {v}")
    if not args.body_timeout_s > 0:
        raise CLIError(f"--body-timeout-s must be > 0, got {args.body_timeout_s}")
    return dict(max_bodies=args.max_bodies, body_timeout_s=args.body_timeout_s, decode_threads=args.decode_threads)


def check_listen(host: str, port: int) -> None:
    """Fail before the model loads when ``host:port`` cannot be listened on (bad port, port in use)."""
    import socket

    if not 0 <= port <= 65535:
        raise CLIError(f"--port must be from 0 to 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise CLIError(f"--host {host!r} is not an address this machine can listen on ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            sock.bind(address)
        except OSError as e:
            raise CLIError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _warm_up(predictors, max_batch: int) -> None:
    """Run one fold and one full batch through each predictor, so the first clients do not pay
    for lazy initialization (allocator, ONNX Runtime/compile graphs)."""
    import torch

    for p in predictors:
        for n in sorted({p.fold, max_batch}):
            p.predict_arrays(torch.zeros((n, *p.input_shape), dtype=torch.uint8))


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from foldcnn.serve import create_app
    except ImportError as e:
        raise CLIError(f"foldcnn serve needs fastapi and uvicorn (pip install 'foldcnn[serve]'): {e}") from None
    from foldcnn.infer import Predictor

    config = serve_config(args)
    check_listen(args.host, args.port)
    if args.host not in LOOPBACK and config.api_key is None:
        print(f"warning: serving on {args.host} without an API key; anyone who can reach this port can use "
              f"the model (set --api-key or FOLDCNN_API_KEY)")
    # The Predictors get decoded arrays from the server: no decoding threads of their own.
    options = predict_options(args).replace(workers=0)
    predictors = [Predictor.from_checkpoint(args.checkpoint, options) for _ in range(args.replicas)]
    app = create_app(predictors, config)
    _warm_up(predictors, app.state.batcher.max_batch)
    p = predictors[0]
    print(f"serving {args.checkpoint}: fold {p.fold}, {p.num_classes} classes, input {p.input_shape}, "
          f"backend {p.stats.backend}/{p.stats.precision}; batches of up to {app.state.batcher.max_batch} images "
          f"or {args.max_wait_ms:g} ms; http://{args.host}:{args.port}/v1/classify"
          + (" (API key required)" if config.api_key else "") + f"; fold isolation: {config.isolation}")
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal with the
    # handler that was in place before it started: make that a clean exit, not death by signal.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.draining = True  # body reads stop with a JSON 503 now, not after the graceful timeout
            super().handle_exit(sig, frame)

    try:
        DrainingServer(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                      timeout_graceful_shutdown=args.graceful_timeout_s,
                                      access_log=args.access_log)).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        for q in predictors:
            q.close()
    return 0


def _add_serve(sub) -> None:
    from foldcnn.serve.validation import ImageLimits

    d = ImageLimits()
    p = sub.add_parser("serve", help="serve a checkpoint over HTTP with fold-aware dynamic batching",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="POST /v1/classify takes one image (raw image/* body), several (multipart "
                       "files) or JSON {\"images\": [base64...]}; GET /healthz, GET /metrics (Prometheus). "
                       "Images of all clients share one queue: a batch goes to the model when it holds "
                       "--batch-size images or its oldest image has waited --max-wait-ms. Ctrl-C / SIGTERM "
                       "finishes the requests in flight before exiting.")
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only by default)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="longest an image waits for its batch to fill (the latency budget of batching)")
    p.add_argument("--max-queue-images", type=int, default=None,
                   help="queued images before new requests get 503 (default 16 x --max-batch)")
    p.add_argument("--replicas", type=int, default=1,
                   help="batches computed at once, each by its own copy of the model (1 is best on a small CPU)")
    deprecated_alias(p, "--workers", "--replicas", dest="replicas", value_type=int)
    add_predict_options(p, unsupported=UNSUPPORTED, defaults={"max_pixels": d.max_pixels})
    deprecated_alias(p, "--max-batch", "--batch-size", dest="batch_size", value_type=int)
    p.add_argument("--api-key", default=None, action="append",
                   help="require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (default: env FOLDCNN_API_KEY); "
                        "repeat it for one key per client or tenant")
    p.add_argument("--isolation", choices=("request", "key", "none"), default="request",
                   help="who may share a fold: request = only images of one request (no client's images change "
                        "another's answers; padding costs throughput on small requests), key = only images sent "
                        "with the same API key, none = anyone (fullest folds; answers depend on other clients)")
    p.add_argument("--max-image-bytes", type=int, default=d.max_image_bytes, help="largest encoded image")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="largest request body")
    p.add_argument("--max-images", type=int, default=d.max_images, help="most images in one request")
    p.add_argument("--max-bodies", type=int, default=16,
                   help="requests read and decoded at once; more get 503 with Retry-After")
    p.add_argument("--body-timeout-s", type=float, default=30.0,
                   help="longest a request body may take to arrive (408 after it)")
    p.add_argument("--decode-threads", type=int, default=2,
                   help="the image-decoding pool's threads (large images also share a budget of --max-pixels "
                   "pixels decoding at once, so small requests are not stuck behind them)")
    p.add_argument("--graceful-timeout-s", type=float, default=30.0,
                   help="on shutdown, how long in-flight requests may take to finish")
    p.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="info")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=_cmd_serve)


COMMANDS = [_add_serve]
