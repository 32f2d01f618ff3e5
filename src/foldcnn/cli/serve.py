"""`foldcnn serve`: an HTTP server with fold-aware dynamic batching (foldcnn.serve)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from foldcnn.cli.common import HelpFormatter, CLIError
from foldcnn.cli.options import add_options, add_predict_options, as_flags, option_values, predict_options

# PredictOptions the server does not take as flags, and why (foldcnn.cli.options).
UNSUPPORTED = {
    "stride": "the server classifies images, not videos",
    "on_error": "the server answers each unreadable image with a 4xx naming it",
    "workers": "the server decodes requests in its own pool (--decode-threads); --replicas sets the model copies",
    "decoders": "the server decodes requests in its own pool",
    "keyframes": "requests carry images, not videos",
    "resize_mode": "the server resizes bilinearly",
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve_config(args: argparse.Namespace):
    """The ServeConfig the flags describe (also used by experiments/published/load_test.py)."""
    from foldcnn.errors import UsageError
    from foldcnn.serve import ImageLimits, ServeConfig

    # --api-key may be repeated (one key per tenant); the environment holds one key.
    keys = args.api_key if args.api_key is not None else [os.environ.get("FOLDCNN_API_KEY")]
    api_key = keys[0] if len(keys) == 1 else tuple(keys)
    options = predict_options(args)
    try:
        limits = ImageLimits(max_image_bytes=args.max_image_bytes, max_body_bytes=args.max_body_bytes,
                             max_pixels=args.max_pixels, max_images=args.max_images, resize=args.resize)
    except ValueError as e:
        raise CLIError(str(e).replace("ImageLimits.", "--").replace("_", "-")) from None
    try:
        return ServeConfig(options, limits=limits, api_key=api_key, **option_values(args, ServeConfig))
    except UsageError as e:
        message = as_flags(str(e), ServeConfig)
        if message == str(e):  # not about one flag (the API key): as the library says it
            raise
        raise CLIError(message) from None


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
    import numpy as np

    for p in predictors:
        for n in sorted({p.fold, max_batch}):
            p.predict_arrays(np.zeros((n, *p.input_shape), dtype=np.uint8))


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401 - fail here, before the model loads

        from foldcnn.serve import create_app  # noqa: F401
    except ImportError as e:
        raise CLIError(f"foldcnn serve needs fastapi and uvicorn (pip install 'foldcnn[serve]'): {e}") from None
    config = serve_config(args)
    if args.processes < 1:
        raise CLIError(f"--processes must be >= 1, got {args.processes}")
    check_listen(args.host, args.port)
    if args.host not in LOOPBACK and config.api_key is None:
        print(f"warning: serving on {args.host} without an API key; anyone who can reach this port can use "
              f"the model (set --api-key or FOLDCNN_API_KEY)")
    if args.engine == "ray":
        return _serve_ray(args, config)
    if args.ray_address is not None:
        raise CLIError("--ray-address is for --engine ray")
    if args.processes == 1:
        return _serve_process(args, config, None, banner=True)
    return _serve_processes(args, config)


def _serve_ray(args: argparse.Namespace, config) -> int:
    """--engine ray: the app as a Ray Serve deployment of --processes replicas (foldcnn.serve.ray_serve),
    on a local Ray instance or the cluster at --ray-address; SIGTERM shuts Serve down (replicas drain)."""
    import threading

    from foldcnn.serve.ray_serve import ray_app

    app = ray_app(args.checkpoint, config, replicas=args.processes)
    import ray
    from ray import serve

    ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=args.log_level == "debug")
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()), signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(app, name="foldcnn", route_prefix="/")
        print(f"serving {args.checkpoint} on Ray Serve: {args.processes} replica(s), "
              f"http://{args.host}:{args.port}/v1/classify", flush=True)
        while not stop.wait(0.5):
            pass
        serve.shutdown()  # replicas finish the requests in flight first (Ray Serve's graceful shutdown)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        ray.shutdown()
    return 0


def _listening_sockets(host: str, port: int, n: int) -> list:
    """One listening socket per server process. On Linux each process gets its own, bound with
    SO_REUSEPORT, and the kernel spreads new connections evenly over them; with one shared socket
    whichever process accepts first takes them (measured: 59 of 64 keep-alive clients on one of
    two processes, which then carried almost all the load). Elsewhere, one shared socket."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    spread = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
    socks = []
    for _ in range(n if spread else 1):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if spread:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, socks[0].getsockname()[1] if socks else port))  # port 0: the first one's port
        sock.set_inheritable(True)
        socks.append(sock)
    return socks if spread else socks * n


def _serve_processes(args: argparse.Namespace, config) -> int:
    """--processes N: N forked servers on one port (each its own model, batcher, queue and, on
    Linux, listening socket; the kernel spreads connections). SIGTERM to this process drains them all."""
    if not hasattr(os, "fork"):
        raise CLIError("--processes needs os.fork (Linux, macOS); run one process per port instead")
    socks = _listening_sockets(args.host, args.port, args.processes)
    sys.stdout.flush()
    children = []
    for i, sock in enumerate(socks):
        pid = os.fork()
        if pid == 0:  # the child: a whole server on its socket
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                # SIGTERM while the model still loads (nothing served yet): a clean exit, as it is later
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
                for other in {*socks} - {sock}:
                    other.close()  # a sibling's socket left open here would hold its connections when it exits
                code = _serve_process(args, config, sock, banner=i == 0)
            except SystemExit as e:
                code = 0 if e.code in (0, None) else 1
            except BaseException:  # noqa: BLE001 - report it, then leave without the parent's cleanup
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    for sock in {*socks}:
        sock.close()
    print(f"{args.processes} server processes share http://{args.host}:{args.port} (pids "
          f"{', '.join(map(str, children))}); /metrics and /healthz describe the process that answers")

    def forward(sig, frame) -> None:  # SIGTERM: drain every child; Ctrl-C reaches them from the terminal
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = signal.signal(signal.SIGTERM, forward), signal.signal(signal.SIGINT, signal.SIG_IGN)
    codes = []
    try:
        for pid in children:
            codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    return 0 if all(c == 0 for c in codes) else 1


def _serve_process(args: argparse.Namespace, config, sock, banner: bool) -> int:
    """One server: load the model, build the app, run uvicorn (on ``sock`` when given) until SIGTERM."""
    import uvicorn

    from foldcnn.infer import Predictor
    from foldcnn.serve import checkpoint_fold_invariant, create_app

    # The Predictors get decoded arrays from the server: no decoding threads of their own.
    options = config.predict.replace(workers=0)
    predictors = [Predictor.from_checkpoint(args.checkpoint, options) for _ in range(args.replicas)]
    app = create_app(predictors, config, fold_invariant=checkpoint_fold_invariant(args.checkpoint))
    _warm_up(predictors, app.state.batcher.max_batch)
    p = predictors[0]
    if banner:
        print(f"serving {args.checkpoint}: fold {p.fold}, {p.num_classes} classes, input {p.input_shape}, "
              f"backend {p.stats.backend}/{p.stats.precision}; batches of up to {app.state.batcher.max_batch} "
              f"images or {args.max_wait_ms:g} ms; http://{args.host}:{args.port}/v1/classify"
              + (" (API key required)" if config.api_key else "") + f"; fold isolation: {app.state.isolation}"
              + (" (auto)" if config.isolation == "auto" else "") + f"; v2 model name: {config.model_name}",
              flush=True)
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal with the
    # handler that was in place before it started: make that a clean exit, not death by signal.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.draining = True  # body reads stop with a JSON 503 now, not after the graceful timeout
            super().handle_exit(sig, frame)

    try:
        server = DrainingServer(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                               timeout_graceful_shutdown=args.graceful_timeout_s,
                                               access_log=args.access_log, loop=args.loop, http=args.http))
        server.run(sockets=[sock] if sock is not None else None)
    except SystemExit as e:  # the re-raised SIGTERM
        if e.code not in (0, None):
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        for q in predictors:
            q.close()
    return 0


def _add_limit_flags(p, d) -> None:
    """What one request may carry (ImageLimits, d: its defaults; --max-pixels and --no-resize are
    PredictOptions' flags, which the limits take too)."""
    g = p.add_argument_group("request limits")
    g.add_argument("--max-image-bytes", type=int, default=d.max_image_bytes, help="largest encoded image")
    g.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="largest request body")
    g.add_argument("--max-images", type=int, default=d.max_images, help="most images in one request")


def _add_server_flags(p) -> None:
    """uvicorn's settings: shutdown, logging, event loop and HTTP parser."""
    p.add_argument("--graceful-timeout-s", type=float, default=30.0,
                   help="on shutdown, how long in-flight requests may take to finish")
    p.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="info")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="uvicorn's event loop (auto: uvloop where installed)")
    p.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto",
                   help="uvicorn's HTTP parser (auto: httptools where installed)")


def _add_serve(sub) -> None:
    from foldcnn.serve.config import ServeConfig
    from foldcnn.serve.validation import ImageLimits

    d = ImageLimits()
    p = sub.add_parser("serve", help="serve a checkpoint over HTTP with fold-aware dynamic batching",
                       formatter_class=HelpFormatter,
                       description="POST /v1/classify takes one image (raw image/* body), several (multipart "
                       "files) or JSON {\"images\": [base64...]}; POST /v2/models/NAME/infer speaks KServe v2 "
                       "(JSON or binary tensors; Triton clients); GET /healthz, GET /metrics (Prometheus). "
                       "Images of all clients share one queue: a batch goes to the model when it holds "
                       "--batch-size images or its oldest image has waited --max-wait-ms. Requests queue; 503 "
                       "with Retry-After only when the admitted work cannot finish within --max-queue-ms. "
                       "Ctrl-C / SIGTERM answers the requests in flight, refuses new ones, then exits 0.")
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only by default)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--engine", choices=("uvicorn", "ray"), default="uvicorn",
                   help="uvicorn: this machine; ray: a Ray Serve deployment of --processes replicas (pip install "
                        "'ray[serve]'), on a local Ray instance or the cluster at --ray-address")
    p.add_argument("--ray-address", default=None, help="with --engine ray: the cluster to join (e.g. auto); "
                   "default: start a local Ray instance")
    p.add_argument("--processes", type=int, default=1,
                   help="server processes sharing the port (forked; each loads its own copy of the model and has its "
                        "own queue): uses more cores for the HTTP work; SIGTERM drains them all")
    add_predict_options(p, unsupported=UNSUPPORTED, defaults={"max_pixels": d.max_pixels})
    p.add_argument("--api-key", default=None, action="append",
                   help="require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (default: env FOLDCNN_API_KEY); "
                        "repeat it for one key per client or tenant")
    add_options(p, ServeConfig, group_title="serving options")
    _add_limit_flags(p, d)
    _add_server_flags(p)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve_bench(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from foldcnn.cli.options import config_from_args, flags_of, write_json_output
    from foldcnn.workflows.serve_bench import ServeBenchConfig, command_line, run_serve_bench

    cfg = config_from_args(ServeBenchConfig, args, {"checkpoints": tuple(args.checkpoints)})
    cfg = replace(cfg, command=command_line(["serve-bench", *cfg.checkpoints, *flags_of(cfg)]))
    print(f"{'model':<16} {'isolation':<9} {'img/req':>7} {'clients':>7} {'answered':>8} {'refused':>7} "
          f"{'req/s':>7} {'img/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'cpu ms/req':>10}")

    def log(row) -> None:
        if isinstance(row, str):
            print(row)
        elif "heavy_clients" in row:
            print(f"heavy mix on {row['model']}: {row['heavy_clients']} clients x {row['heavy_images']} heavy images "
                  f"{row['heavy_statuses']}; one-image victim: {row['victim_statuses']}, p50 {row['victim_p50_ms']} "
                  f"ms, worst {row['victim_max_ms']} ms; server peak RSS {row['server_peak_rss_mib']} MiB")
        else:
            other = sum(v for k, v in row["statuses"].items() if k not in ("200", "503"))
            print(f"{row['model']:<16} {row['isolation']:<9} {row['images_per_request']:>7} {row['clients']:>7} "
                  f"{row['answered']:>8} {row['refused']:>7} {row['requests_per_s']:>7.0f} {row['images_per_s']:>8.0f} "
                  f"{row['p50_ms'] or float('nan'):>7.1f} {row['p99_ms'] or float('nan'):>7.1f} "
                  f"{row['server_cpu_ms_per_request'] or float('nan'):>10.3f}" + (f"  other: {other}" if other else ""))

    doc = run_serve_bench(cfg, log=log)
    if args.out is None:  # the project's results/ data: WHAT_WHERE_COMMIT.json
        from foldcnn.results import write_result
        from foldcnn.workflows.serve_bench import result_fields

        out = str(write_result("results", **result_fields(doc)))
    else:
        out = args.out
        write_json_output(doc, out)
    if out != "-":
        print(f"wrote {out} (load before {doc['load_before']}, after {doc['load_after']})")
    return 0


def _add_serve_bench(sub) -> None:
    from foldcnn.workflows.serve_bench import ServeBenchConfig

    p = sub.add_parser("serve-bench", help="load-test foldcnn serve on loopback: concurrency sweep, request sizes, "
                       "heavy-client mix", formatter_class=HelpFormatter,
                       description="Starts one `foldcnn serve` per model on a free loopback port and drives it with "
                       "closed-loop clients (one keep-alive connection each), step by step: every --clients value x "
                       "every --request-sizes value, each on every model in turn, each bounded by --requests and "
                       "--seconds. Prints answered / refused / req/s / p50 / p99 per step and writes the results "
                       "(command, date, CPU, commit, load) as JSON.")
    p.add_argument("checkpoints", nargs="*", help="checkpoints to serve side by side (default: random-weight "
                   "apex-squad-count at fold 1, at --fold, and at --fold with zeroed cross-slot weights)")
    add_options(p, ServeBenchConfig)
    p.add_argument("--out", default=None, help="write the run's whole document here ('-': standard output) "
                   "instead of results/serve-bench-PROTOCOL_CPU_COMMIT.json (foldcnn.results.write_result)")
    p.set_defaults(func=_cmd_serve_bench)


COMMANDS = [_add_serve, _add_serve_bench]
