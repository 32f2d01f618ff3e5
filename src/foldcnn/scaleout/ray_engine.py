"""Offline folded inference over many images and videos on a Ray cluster (Ray Data).

    read tasks (Ray tasks, one per video / per group of images)
        decode + resize -> fold rows uint8 (f, C, H, W)           see foldcnn.scaleout.tasks
    actor pool (map_batches with a callable class, ``num_actors`` actors)
        each actor loads the Predictor once; batches of batch_size/f fold rows
        -> predict_arrays -> per-image (class_index, confidence)
    driver
        collects the small per-image rows, numbers them as the Predictor does (``index``:
        position in the expanded input list), writes predictions.parquet / predictions.csv
        (foldcnn.infer.results' schema, input order) / failed.csv / summary.json

Which images share a fold is fixed before Ray sees the data (foldcnn.scaleout.inputs, the
Predictor's isolation rule), so the results equal the single-process Predictor's and do not
depend on scheduling. Read tasks get absolute paths; on a multi-node cluster every node must see
them (a shared filesystem).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import socket
import time
from pathlib import Path

import numpy as np

from foldcnn.data.readers import DataReadError
from foldcnn.infer.options import PredictOptions, check_supported
from foldcnn.errors import MissingExtraError, UsageError
from foldcnn.fold import padded_count, round_batch
from foldcnn.scaleout.inputs import expand_inputs, make_units
from foldcnn.scaleout.outputs import number_rows, write_failed, write_predictions
from foldcnn.scaleout.tasks import FoldedInference, decode_units

__all__ = ["FORMATS", "run_ray_predict"]

FORMATS = ("parquet", "csv")
# Images per read task, rounded up to a multiple of f: big enough that task overhead (about a
# millisecond) is small next to decoding, small enough to spread a folder over many CPUs.
IMAGES_PER_TASK = 256
# Decoding is partly I/O (reading files), so two read tasks may share a core. The different
# resource request from the actors' (whole CPUs or a GPU) also keeps Ray Data from fusing
# decoding into the actors, which would serialize decoding with the model.
DECODE_CPUS = 0.5
_QUIET_LOGGERS = ("ray", "ray.data", "ray.data._internal.progress")


def _require_ray():
    try:
        import pyarrow  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingExtraError("the Ray engine needs Ray Data and pyarrow: pip install 'foldcnn[ray]'") from None


# What the Ray engine cannot honour yet (foldcnn.infer.options.check_supported refuses these
# when set, with the reason, instead of ignoring them).
UNSUPPORTED = {
    "workers": "decoding runs in Ray read tasks, one per group of images or per video, scheduled by Ray "
               "(DECODE_CPUS each), not in threads",
    "decoders": "decoding runs in Ray read tasks",
    "keyframes": "Ray read tasks decode every frame",
    "select_seconds": "backend auto is not available on Ray; name a backend",
}


def _check_args(options, num_actors, formats) -> tuple[str, ...]:
    check_supported(options, UNSUPPORTED, "the Ray engine (--engine ray)")
    if options.partial_mode == "fallback":
        raise UsageError("the Ray engine pads the partial last fold of each group of images or video; "
                         "--partial fallback is not available with --engine ray")
    if options.backend == "auto":
        raise UsageError("backend auto is not available on Ray (each actor would time the backends); name one")
    if num_actors is not None and (isinstance(num_actors, bool) or not isinstance(num_actors, int)
                                   or num_actors < 1):
        raise UsageError(f"num_actors must be an int >= 1 or None (automatic), got {num_actors!r}")
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"formats must be a non-empty subset of {FORMATS}, got {formats!r}")
    return formats


def _load_meta(checkpoint) -> tuple[str, int, tuple[int, int, int], list[str]]:
    """Read the checkpoint on the driver: a bad one fails here, before any cluster starts."""
    from foldcnn.checkpoints import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    shape = tuple(int(v) for v in ckpt.model.input_shape)
    if shape[0] != 3:
        raise UsageError(f"the Ray engine reads RGB images and videos, but {checkpoint} expects "
                         f"{shape[0]}-channel inputs")
    return str(Path(checkpoint).resolve()), ckpt.fold, shape, list(ckpt.class_names)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds: Ray itself retries an address nobody listens on for minutes."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # "auto" and other forms: left to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address!r} ({e}); start one with "
                              "'ray start --head' or pass address=None for a local cluster") from None


@contextlib.contextmanager
def _cluster(address: str | None, progress: bool):
    """Start a local cluster (address None) and shut it down after, or join one and leave it.

    A Ray session already open in this process is used as it is and left open.
    """
    import ray

    if ray.is_initialized():
        yield "existing"
        return
    kwargs = {"logging_level": logging.INFO if progress else logging.ERROR, "log_to_driver": progress}
    if address is None:
        # "local" always starts a new cluster, even when RAY_ADDRESS points at another one.
        ray.init(address="local", include_dashboard=False, **kwargs)
    else:
        _check_reachable(address)
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as e:
            raise ConnectionError(
                f"cannot join the Ray cluster at {address!r} ({e}); if it uses token authentication "
                "(the default of recent Ray), set RAY_AUTH_MODE=token and give this machine the "
                "cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)") from None
    try:
        yield address or "local"
    finally:
        # A cluster we joined keeps running: only this driver disconnects.
        ray.shutdown()


@contextlib.contextmanager
def _quiet(progress: bool):
    """Ray Data's progress bars and logs on or off for this run only. Quiet silences even Ray's
    error logs: every failure still reaches the caller as an exception."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars
    levels = {n: logging.getLogger(n).level for n in _QUIET_LOGGERS}
    ctx.enable_progress_bars = progress
    if not progress:
        for n in _QUIET_LOGGERS:
            logging.getLogger(n).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        ctx.enable_progress_bars = saved
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _data_error(e: BaseException) -> str | None:
    """The message of the DataReadError behind a Ray task failure, if that is what it was.

    Ray re-raises a task's exception as ``RayTaskError(DataReadError)`` (a subclass of both,
    carrying the remote traceback); the original is its ``cause``.
    """
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DataReadError) and not type(e).__module__.startswith("ray"):
            return str(e).splitlines()[0]  # Ray appends its retry advice on further lines
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    return None


def _pipeline(units, *, checkpoint, options, threads, fold, input_shape, batch_size, num_actors):
    import ray.data

    gpus = 1 if options.device != "cpu" else 0
    decode_kwargs = {"fold": fold, "input_shape": input_shape, "stride": options.stride, "chunk": batch_size,
                     "on_error": options.on_error, "resize": options.resize, "resize_mode": options.resize_mode,
                     "max_pixels": options.max_pixels}
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    ds = ds.map_batches(decode_units, batch_size=1, batch_format="numpy", fn_kwargs=decode_kwargs,
                        num_cpus=DECODE_CPUS)
    return ds.map_batches(
        FoldedInference, batch_size=batch_size // fold, batch_format="numpy",
        fn_constructor_kwargs={"checkpoint": checkpoint, "options": options.replace(threads=threads)},
        compute=ray.data.ActorPoolStrategy(size=num_actors), num_cpus=threads, num_gpus=gpus)


def _default_actors(device: str, threads: int) -> int:
    """One actor per GPU on GPUs; on CPUs half the cores, leaving the rest to decoding."""
    import ray

    res = ray.cluster_resources()
    if device != "cpu":
        if res.get("GPU", 0) < 1:
            raise UsageError(f"device={device!r} needs GPUs but the Ray cluster has none; use device='cpu'")
        return int(res["GPU"])
    return max(1, int(res.get("CPU", 1)) // 2 // threads)


def _collect(ds) -> dict[str, np.ndarray]:
    import pyarrow as pa

    tables = list(ds.iter_batches(batch_format="pyarrow", batch_size=None))
    if not tables:
        return {"source_id": np.zeros(0, np.int64), "frame": np.zeros(0, np.int64),
                "class_index": np.zeros(0, np.int64), "confidence": np.zeros(0, np.float32),
                "error": np.zeros(0, object)}
    t = pa.concat_tables(tables)
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


def run_ray_predict(checkpoint, inputs, out_dir, options: PredictOptions | None = None, *,
                    address: str | None = None, progress: bool = True, num_actors: int | None = None,
                    formats=("parquet", "csv"), **overrides) -> dict:
    """Classify every image and video frame of ``inputs`` on a Ray cluster; write the results.

    ``inputs``: folders, globs, image and video files, mixed, expanded and decoded as the Predictor
    does. ``options`` (PredictOptions; ``overrides`` name its fields) as for the Predictor, threads
    per actor default 1; those the engine cannot honour (``UNSUPPORTED``) are refused when set. ``num_actors`` inference actors, each holding
    ``threads`` CPUs (default: half the cluster's CPUs, the other half decode) or, with
    ``device="cuda"``, one GPU each (default: one per GPU).
    ``address=None`` starts a local Ray cluster on this machine and stops it after; an address
    (``"auto"``, ``"host:6379"``, ``"ray://host:10001"``) joins a running cluster and leaves it
    running; a Ray session already open in this process is used as it is.
    Unreadable files are reported (``on_error="skip"``: in ``failed`` and ``failed.csv``) or
    raised (``"raise"``: DataReadError naming the file).

    Writes ``out_dir/predictions.{parquet,csv}`` (``formats``; foldcnn.infer.results.RESULT_COLUMNS,
    row for row what ``foldcnn predict`` writes locally), ``failed.csv`` (source, reason) and
    ``summary.json``, which it returns: images, files, failed, seconds (decoding + inference on the
    cluster), images_per_s, outputs (paths), padding, and the settings used.
    """
    t0 = time.perf_counter()
    options = (options or PredictOptions()).replace(**overrides)
    formats = _check_args(options, num_actors, formats)
    threads_per_actor = options.threads or 1
    device = options.device
    _require_ray()
    ckpt_path, fold, input_shape, class_names = _load_meta(checkpoint)
    files = expand_inputs(inputs)
    if files.videos and importlib.util.find_spec("av") is None:
        raise MissingExtraError("reading video needs PyAV: pip install 'foldcnn[video]'")
    out = _out_dir(out_dir)
    batch_size = round_batch(options.batch_size, fold)  # as the Predictor rounds it
    sources, units, unit_of = make_units(files, padded_count(IMAGES_PER_TASK, fold))

    t1 = time.perf_counter()
    rows, where, actors = _run_on_cluster(units, address=address, progress=progress, num_actors=num_actors,
                                          checkpoint=ckpt_path, options=options, threads=threads_per_actor,
                                          fold=fold, input_shape=input_shape, batch_size=batch_size)
    seconds = time.perf_counter() - t1
    failed, good, padded = _split_rows(rows, sources, unit_of, len(units), fold)
    n = len(good["source_id"])
    numbered = number_rows(good, rows["source_id"][rows["error"] != ""], len(sources))
    outputs = write_predictions(out, numbered, sources, [k for k, _ in files.files], class_names, formats)
    outputs["failed"] = write_failed(out, failed)
    outputs["summary"] = str(out / "summary.json")
    summary = {
        "images": n, "files": files.n_files, "image_files": len(files.images), "video_files": len(files.videos),
        "failed": failed, "ignored": files.ignored, "unmatched": files.unmatched,
        "seconds": seconds, "images_per_s": n / seconds if seconds > 0 else 0.0,
        "seconds_startup": t1 - t0, "seconds_total": time.perf_counter() - t0,
        "fold": fold, "batch_size": batch_size, "padded_images": padded,
        "padding_waste": padded / (n + padded) if n + padded else 0.0,
        "num_actors": actors, "threads_per_actor": threads_per_actor, "backend": options.backend,
        "precision": options.precision, "device": device, "options": options.to_dict(),
        "cluster": where, "checkpoint": ckpt_path, "outputs": outputs,
    }
    Path(outputs["summary"]).write_text(json.dumps(summary, indent=2))
    return summary


def _run_on_cluster(units, *, address, progress: bool, num_actors: int | None, **pipeline) -> tuple[dict, dict, int]:
    """The rows of every unit classified on the cluster (joined or started for the call), where it
    ran, and how many inference actors did it; an unreadable input raises DataReadError."""
    with _quiet(progress), _cluster(address, progress) as where:
        actors = num_actors or _default_actors(pipeline["options"].device, pipeline["threads"])
        ds = _pipeline(units, num_actors=actors, **pipeline)
        try:
            return _collect(ds), where, actors
        except Exception as e:
            message = _data_error(e)
            if message is None:
                raise
            raise DataReadError(message) from None


def _out_dir(out_dir) -> Path:
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"out_dir {out} is a file; give a directory for predictions.parquet/csv")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _split_rows(rows: dict, sources: list, unit_of, n_units: int, fold: int) -> tuple[list, dict, int]:
    """The cluster's rows as (failed files, the rows of classified images, padded images): each
    unit (one video, or one group of images) pads its own last fold."""
    bad = rows["error"] != ""
    failed = [{"source": sources[i], "reason": r} for i, r in
              sorted(zip(rows["source_id"][bad].tolist(), rows["error"][bad].tolist()))]
    good = {k: v[~bad] for k, v in rows.items() if k != "error"}
    per_unit = np.bincount(np.asarray(unit_of, np.int64)[good["source_id"]], minlength=n_units)
    return failed, good, int(((-per_unit) % fold).sum())
