"""The Predictor: a stream of images -> folds of f -> batches -> backend -> per-image results.

Images are grouped in input order (inference needs no random grouping): the n-th image of a
fold stream goes to that stream's fold n // f. Every video is its own stream (its frames are
folded only with frames of the same video, its last fold padded); the images, PIL images and
arrays between videos form one stream in input order. Batches hold ``batch_size`` images (a
multiple of f), so batch boundaries never split a fold and no result depends on how the input
was chunked or on the batch size. The last fold of a stream may be partial: ``partial="pad"``
fills it with zero images whose outputs are discarded; ``partial="fallback"`` sends its images
through an unfolded (fold=1) model instead.
Note that the images of one fold do affect each other's logits (that is the method); nothing
outside a fold, and no padding choice, changes a result.

The model may be an exported graph (an ``.onnx`` with its sidecar, or a checkpoint whose graph
is cached: foldcnn.backends.graphs) run on ort or openvino: then torch is never imported.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from foldcnn.backends.base import cores_shared, default_threads
from foldcnn.backends.graphs import GRAPH_BACKENDS, GraphModel, NeedsTorchError, is_onnx_path, torch_available
from foldcnn.errors import UsageError, UsageTypeError
from foldcnn.fold import check_fold, fold_images, round_batch, unfold_logits
from foldcnn.infer.arrays import as_nchw
from foldcnn.infer.options import ON_ERROR, PARTIAL_MODES, PredictOptions
from foldcnn.infer.batching import BatchAssembler, ChunkBuffer, softmax
from foldcnn.infer.pipeline import LazyProcessPool, ordered_map
from foldcnn.infer.results import Prediction, PredictStats, SkippedInput
from foldcnn.infer.sources import Chunk, InputSpec, count_inputs, files_per_job, iter_jobs
from foldcnn.progress import progress_bar

if TYPE_CHECKING:
    import torch

__all__ = ["ON_ERROR", "PARTIAL_MODES", "Predictor"]


def _after(chunk: Chunk, position: int) -> Chunk | None:
    """The part of ``chunk`` after input ``position`` (its indices increase), None if nothing."""
    k = next((j for j, i in enumerate(chunk.indices) if i > position), None)
    if k is None:
        return None
    return Chunk(chunk.images[k:], chunk.indices[k:], chunk.sources[k:], chunk.frames[k:], stream=chunk.stream)

_DEFAULT_THREADS = 2  # decoding threads when workers is None


def _load_model(model_or_path, what: str):
    """A FoldedCNN, an exported graph (GraphModel or an .onnx path), or a checkpoint path ->
    (model, class_names or None)."""
    if isinstance(model_or_path, GraphModel):
        return model_or_path, model_or_path.class_names
    if is_onnx_path(model_or_path):
        from foldcnn.backends.graphs import load_onnx

        graph = load_onnx(model_or_path)
        return graph, graph.class_names
    if isinstance(model_or_path, (str, os.PathLike)):
        require_torch(f"the checkpoint {model_or_path} as a torch model")
        from foldcnn.checkpoints import load_checkpoint

        ck = load_checkpoint(model_or_path)
        return ck.model, ck.class_names
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not isinstance(model_or_path, torch.nn.Module) or not hasattr(model_or_path, "fold"):
        raise UsageTypeError(f"{what} must be a FoldedCNN (foldcnn.create_model), an exported graph (.onnx) or a "
                             f"checkpoint path, got {type(model_or_path).__name__}")
    return model_or_path, None


def require_torch(what: str) -> None:
    """A NeedsTorchError saying how to do without torch, when torch is not installed."""
    if not torch_available():
        raise NeedsTorchError(
            f"running {what} needs torch, which is not installed; export it once where torch is installed "
            "(foldcnn export CHECKPOINT --out model.onnx, with --precision int8 for int8) and predict with "
            "model.onnx, or run this checkpoint once with --backend ort there to cache its graph in "
            "CHECKPOINT/onnx-cache/ (pip install 'foldcnn[train]' adds torch)")


def _graph_engine(graph: GraphModel, opts: PredictOptions) -> tuple[str, str]:
    """(backend name, precision) for an exported graph: ort or openvino (the default eager means
    ort), at the graph's own precision; another engine or a precision the graph lacks is refused."""
    import importlib.util

    chosen = opts.non_default()
    name = opts.backend
    if name == "auto" or (name == "eager" and "backend" not in chosen):
        name = "ort" if importlib.util.find_spec("onnxruntime") is not None else "openvino"
    if name not in GRAPH_BACKENDS:
        raise UsageError(f"{graph.source} is an exported graph: it runs on {' or '.join(GRAPH_BACKENDS)} (or auto), "
                         f"not {name}; pass --backend ort (backend='ort'), or predict with the checkpoint to use {name}")
    precision = graph.precision
    if "precision" in chosen and opts.precision != precision:
        if not (opts.precision == "bf16" and precision == "fp32" and name == "openvino"):
            raise UsageError(f"{graph.source} is a {precision} graph, so it runs at {precision}, not "
                             f"{opts.precision}; export the checkpoint at {opts.precision} (foldcnn export "
                             f"--precision {opts.precision}) or drop --precision")
        precision = opts.precision
    return name, precision


class Predictor:
    """Classify images with a (folded) model; results per image, in input order.

    ``options`` (:class:`foldcnn.infer.options.PredictOptions`) says how: backend, precision,
    device, batch size (rounded down to a multiple of the fold f, at least f), threads, decoding
    workers (0: decode in the calling thread), what to do with the partial last fold, unreadable
    inputs (``on_error``), resizing and the video stride. Keyword ``overrides`` name the same
    fields (``Predictor(model, batch_size=256)``). ``backend`` may also be a ready Backend
    object (not closed by the Predictor). ``backend="auto"`` times the backends usable at the
    precision and keeps the fastest (see ``p.stats.backend_selection``).
    ``calibration`` uint8 (N, C, H, W) images are required for ``precision="int8"``.

    Answers depend on fold-mates: the f images folded together affect each other's logits
    (that is the method). Images are folded in input order, so the same ordered input gives the
    same answers; nothing outside a fold, and no padding or batching choice, changes a result.
    Isolation rule: a video's frames are folded only with frames of the same video (its last
    fold padded, or sent to the fallback), never with images or another video's frames; the
    images between videos are folded together in input order. The Ray engine groups the same
    way (see docs/scaleout.md for the one case where it can differ).
    Not thread-safe: use one Predictor per thread.
    """

    def __init__(self, model, class_names: Sequence[str] | None = None, options: PredictOptions | None = None, *,
                 calibration: torch.Tensor | None = None, **overrides) -> None:
        backend_object = None
        if "backend" in overrides and not isinstance(overrides["backend"], str):
            backend_object = overrides.pop("backend")
        if options is not None and not isinstance(options, PredictOptions):
            raise UsageTypeError(f"options must be a foldcnn.infer.PredictOptions, got {type(options).__name__}")
        opts = (options or PredictOptions()).replace(**overrides)
        self.options = opts
        model, saved_names = _load_model(model, "model")
        self.model = model
        self.graph = model if isinstance(model, GraphModel) else None
        engine = opts.backend
        if self.graph is not None and backend_object is None:
            engine, precision = _graph_engine(self.graph, opts)
            opts = self.options = opts.replace(backend=engine, precision=precision)
        self.fold = check_fold(model.fold)
        self.num_classes = int(model.num_classes)
        self.input_shape = tuple(int(s) for s in model.input_shape)
        names = class_names if class_names is not None else saved_names
        self.class_names = [str(c) for c in names] if names is not None else [str(i) for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise UsageError(f"{len(self.class_names)} class names for a model with {self.num_classes} classes")
        self.batch_size = round_batch(opts.batch_size, self.fold)
        self._processes = LazyProcessPool(default_threads(None) if opts.workers is None else opts.workers)
        use_processes = opts.decoders == "processes" or (opts.decoders == "auto" and self._processes.available)
        if opts.decoders == "processes" and not self._processes.available:
            raise UsageError("decoders='processes' needs os.fork (Linux, macOS); use decoders='threads'")
        self.decoders = "processes" if use_processes else "threads"
        if not use_processes:
            self._processes = None
        default_workers = self._processes.workers if use_processes else _DEFAULT_THREADS
        self.workers = default_workers if opts.workers is None else opts.workers
        # Two buffers: the engine thread reads one batch while the next is assembled (see _run).
        self._assemble = BatchAssembler(buffers=2)
        self._engine: ThreadPoolExecutor | None = None  # the engine's own thread (workers > 0), made on first use
        self.partial = opts.partial_mode
        self._spec = InputSpec(self.input_shape, opts.resize, opts.resize_mode, opts.on_error, 1, opts.max_pixels,
                               chunk=self.batch_size, keyframes=opts.keyframes,
                               # several videos decode at once (PyAV releases the GIL): up to 2 ahead
                               videos_ahead=min(self.workers, 2))
        if opts.precision == "int8" and calibration is None and backend_object is None and self.graph is None:
            raise UsageError("precision='int8' needs calibration images: pass calibration= (uint8 (N, C, H, W) "
                             "training images) or use Predictor.from_checkpoint on a checkpoint from 'foldcnn train'")
        self._owns_backend = backend_object is None
        self.backend_selection: dict | None = None
        self._backend = self._make_backend(backend_object if backend_object is not None else engine,
                                           opts.precision, opts.threads, opts.device, calibration, opts.select_seconds)
        try:
            self._fallback = self._fallback_backend(opts.fallback, opts.threads) if self.partial == "fallback" \
                else None
        except BaseException:
            if self._owns_backend:
                self._backend.close()
            raise
        self.stats = self._new_stats()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, options: PredictOptions | None = None, **overrides) -> Predictor:
        """Load a checkpoint directory (model.safetensors + config.json); options as for Predictor.

        For ``precision="int8"`` the checkpoint's stored calibration images are used. With the ort
        or openvino backend at fp32 or int8, a graph of the checkpoint already in its cache
        (``onnx-cache/``, written by an earlier run) is run as it is, without torch; otherwise the
        model is built with torch (and its graph exported and cached); without torch that is a
        NeedsTorchError naming ``foldcnn export``.
        """
        calibration = overrides.pop("calibration", None)
        extra = {} if isinstance(overrides.get("backend", ""), str) else {"backend": overrides.pop("backend")}
        opts = (options or PredictOptions()).replace(**overrides)
        if is_onnx_path(path):  # an exported graph and its sidecar
            return cls(path, None, opts, **extra)
        if not extra and opts.backend in GRAPH_BACKENDS and opts.precision in ("fp32", "int8"):
            from foldcnn.backends.graph_cache import cached_checkpoint_graph
            from foldcnn.tensors import is_tensor, tensor_to_numpy

            cal = tensor_to_numpy(calibration) if is_tensor(calibration) else calibration
            graph = cached_checkpoint_graph(path, opts.precision, cal)
            if graph is not None:
                return cls(graph, graph.class_names, opts)
        require_torch(f"the checkpoint {path} (its {opts.backend}/{opts.precision} graph is not cached)"
                      if opts.backend in GRAPH_BACKENDS else f"the checkpoint {path} on the {opts.backend} backend")
        from foldcnn.checkpoints import load_calibration, load_checkpoint

        ck = load_checkpoint(path)
        ck.model.checkpoint_dir = Path(path)  # engines may cache what they derive from it (ONNX graphs)
        if opts.precision == "int8" and calibration is None:
            calibration = load_calibration(path)
            if calibration is None:
                raise UsageError(f"precision='int8' needs calibration images but checkpoint {path} has none "
                                 "(checkpoints from 'foldcnn train' store them); pass calibration= or use fp32")
        return cls(ck.model, ck.class_names, opts, calibration=calibration, **extra)

    # ------------------------------------------------------------------------------ backends
    def _make_backend(self, backend, precision, threads, device, calibration, select_seconds):
        max_batch = self.batch_size // self.fold
        if not isinstance(backend, str):
            if not hasattr(backend, "run"):
                raise UsageTypeError(f"backend must be a name or a Backend object, got {type(backend).__name__}")
            if getattr(backend, "fold", self.fold) != self.fold or \
                    tuple(getattr(backend, "input_shape", self.input_shape)) != self.input_shape:
                raise UsageError("the backend object was built for another model (fold or input shape differ)")
            return backend
        from foldcnn.backends import create_backend

        # Decoders run beside the engine: its idle threads should yield the cores to them.
        with cores_shared(self.workers > 0):
            if backend != "auto":
                return create_backend(self.model, backend, precision=precision, threads=threads, device=device,
                                      max_batch=max_batch, calibration=calibration)
            from foldcnn.backends.select import select_backend

            extra = {} if select_seconds is None else {"seconds": select_seconds}
            chosen, info = select_backend(self.model, precisions=(precision,), max_batch=max_batch,
                                          calibration=calibration, device=device, threads=threads, **extra)
        self.backend_selection = dict(info)
        return chosen

    def _fallback_backend(self, fallback, threads):
        fb, fb_names = _load_model(fallback, "fallback")
        if fb.fold != 1:
            raise UsageError(f"the fallback model must be unfolded (fold=1), got fold={fb.fold}")
        if tuple(fb.input_shape) != self.input_shape or fb.num_classes != self.num_classes:
            raise UsageError(f"the fallback model takes {tuple(fb.input_shape)} images into {fb.num_classes} "
                             f"classes but the folded model takes {self.input_shape} into {self.num_classes}; "
                             "use a fallback trained on the same task")
        if fb_names is not None and list(fb_names) != self.class_names:
            raise UsageError(f"the fallback model's classes {list(fb_names)[:6]}... differ from the folded "
                             f"model's {self.class_names[:6]}...; use a fallback trained on the same task")
        from foldcnn.backends import create_backend

        # At most f-1 images per stream go this way: plain eager fp32 is enough.
        return create_backend(fb, "eager", threads=threads, max_batch=max(1, self.fold - 1))

    @property
    def backend(self):
        return self._backend

    @property
    def skipped(self) -> list[SkippedInput]:
        """Inputs of the latest call that gave no prediction (``on_error="skip"``), with reasons."""
        return self.stats.skipped_inputs

    def _new_stats(self) -> PredictStats:
        return PredictStats(backend=getattr(self._backend, "name", type(self._backend).__name__),
                            precision=getattr(self._backend, "precision", ""), fold=self.fold,
                            batch_size=self.batch_size, backend_selection=self.backend_selection,
                            decoders=self.decoders if self.workers else "inline", workers=self.workers,
                            graph_cache=getattr(self._backend, "graph_cache", None))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown(wait=True)
            self._engine = None
        if self._processes is not None:
            self._processes.shutdown()
        if self._owns_backend:
            self._backend.close()
        if self._fallback is not None:
            self._fallback.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------- core
    def _probs(self, images: list[np.ndarray], stats: PredictStats, fallback: bool = False) -> np.ndarray:
        """Images (k, C, H, W) -> softmax probabilities (k, K) float32; pads the last fold if needed."""
        x, k = self._assemble(images, 1 if fallback else self.fold)
        return self._probs_of(x, k, stats, fallback)

    def _probs_of(self, x: np.ndarray, k: int, stats: PredictStats, fallback: bool = False) -> np.ndarray:
        """An assembled batch (k', C, H, W) holding k images -> their probabilities (k, K)."""
        f = 1 if fallback else self.fold
        t0 = time.perf_counter()
        logits = (self._fallback if fallback else self._backend).run(fold_images(x, f))
        stats.seconds_model += time.perf_counter() - t0
        stats.images += k
        if fallback:
            stats.fallback_images += k
        else:
            stats.folded_inputs += x.shape[0] // f
            stats.padded_images += x.shape[0] - k
        per_image = unfold_logits(np.asarray(logits, dtype=np.float32), f)[:k]
        return softmax(per_image)

    def _stream(self, chunks: Iterator[Chunk], stats: PredictStats, resume_after: int = -1) -> Iterator[tuple]:
        """Chunks -> (indices, sources, frames, images, fallback) per batch to run, in input order.

        A new fold stream (``Chunk.stream``: a video begins or ends) ends the current one: its
        partial last fold is padded (or goes to the fallback) before the next stream's images.
        """
        buf = ChunkBuffer()
        stream = None
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            stats.seconds_decode += time.perf_counter() - t0
            if chunk is None:
                break
            stats.seconds_decode_work += chunk.seconds_decode
            if chunk.in_process:
                stats.images_decoded_in_processes += len(chunk.indices)
            if chunk.skipped:
                stats.skipped_inputs.extend(chunk.skipped)
                stats.skipped = len(stats.skipped_inputs)
            stats.ignored_files.extend(chunk.ignored)
            stats.incomplete_inputs.extend(chunk.incomplete)
            if chunk.stream != stream and not chunk.ignored:
                yield from self._finish_stream(buf, stats)
                stream = chunk.stream
            if chunk.images is None or not len(chunk.indices):
                continue
            if chunk.indices[0] <= resume_after:  # written by the run being resumed
                chunk = _after(chunk, resume_after)
                if chunk is None:
                    continue
            buf.add(chunk)
            while buf.n >= self.batch_size:
                imgs, idx, src, frm = buf.take(self.batch_size)
                yield idx, src, frm, imgs, False
        yield from self._finish_stream(buf, stats)

    def _finish_stream(self, buf: ChunkBuffer, stats: PredictStats) -> Iterator[tuple]:
        """Run what ``buf`` holds, its partial last fold padded or through the fallback model."""
        full = buf.n - buf.n % self.fold if self.partial == "fallback" else buf.n
        if full:
            imgs, idx, src, frm = buf.take(full)
            yield idx, src, frm, imgs, False
        if buf.n:  # fallback: the images of the partial last fold, through the unfolded model
            imgs, idx, src, frm = buf.take(buf.n)
            yield idx, src, frm, imgs, True

    def _run(self, work: Iterator[tuple], stats: PredictStats, ahead: bool) -> Iterator[tuple]:
        """(indices, sources, frames, probabilities (k, K)) for each batch of ``work``, in order.

        With ``ahead`` the engine runs in its own thread, one batch ahead: batch k+1 is computed
        while the caller handles batch k (writes its rows) and the next decoded images are
        gathered and assembled into the other of two buffers, so that work no longer leaves the
        engine idle (the engines release the GIL).
        Only that one thread calls the engine, one batch at a time. A failure is raised at its
        place: the batches before a failing input are delivered first, as without the thread.
        On the way out nothing is left running in the engine thread."""
        if not ahead:
            for idx, src, frm, imgs, fallback in work:
                yield idx, src, frm, self._probs(imgs, stats, fallback)
            return
        engine = self._engine_thread()
        pending: deque = deque()
        failure = None
        try:
            while True:
                try:
                    item = next(work, None)
                except Exception as e:  # the input failed after the batches in flight: deliver them first
                    failure = e
                    break
                if item is None:
                    break
                idx, src, frm, imgs, fallback = item
                try:  # here, not in the engine thread: it overlaps the engine's previous batch
                    x, k = self._assemble(imgs, 1 if fallback else self.fold)
                except Exception as e:  # noqa: BLE001 - raised after the batches in flight, as above
                    failure = e
                    break
                pending.append((idx, src, frm, engine.submit(self._probs_of, x, k, stats, fallback)))
                if len(pending) > 1:
                    idx0, src0, frm0, fut = pending.popleft()
                    yield idx0, src0, frm0, fut.result()
            while pending:
                idx0, src0, frm0, fut = pending.popleft()
                yield idx0, src0, frm0, fut.result()
            if failure is not None:
                raise failure
        finally:
            wait([fut for *_, fut in pending if not fut.cancel()])

    def _engine_thread(self) -> ThreadPoolExecutor:
        if self._engine is None:
            self._engine = ThreadPoolExecutor(1, thread_name_prefix="foldcnn-engine")
        return self._engine

    # ------------------------------------------------------------------------------- public
    def _batches(self, source, stride: int | None, progress: bool, resume_after: int = -1) -> Iterator[tuple]:
        """(indices, sources, frames, class indices (k,), confidences list, probabilities (k, K))
        per batch, in input order; the time the consumer spends on each counts as "write".
        ``resume_after``: inputs at positions up to it are skipped (see predict_to)."""
        stride = self.options.stride if stride is None else self.options.replace(stride=stride).stride
        spec = replace(self._spec, stride=stride, resume_after=resume_after)
        stats = self.stats = self._new_stats()
        t0 = time.perf_counter()
        total = count_inputs(source, spec.stride, spec.keyframes) if progress else None
        bar = progress_bar(total=total, disable=not progress, unit="img", desc="predict", smoothing=0.1)
        # Deep enough that the decoders fill the next batch while the engine runs this one.
        processes = self._processes if self.workers else None
        depth = max(2 * self.workers, -(-self.batch_size // files_per_job(processes)) + self.workers)
        chunks = ordered_map(iter_jobs(source, spec, processes), self.workers, depth=depth, processes=processes)
        batches = self._run(self._stream(chunks, stats, resume_after), stats, ahead=self.workers > 0)
        try:
            for idx, src, frm, probs in batches:
                top = probs.argmax(axis=1)
                conf = probs[np.arange(len(top)), top].tolist()
                t_out = time.perf_counter()
                yield idx, src, frm, top, conf, probs
                bar.update(stats.images + stats.skipped - bar.n)  # skipped inputs count as done
                stats.seconds_write += time.perf_counter() - t_out
        finally:
            batches.close()  # first: nothing left running in the engine thread
            chunks.close()
            bar.close()
            stats.seconds_total = time.perf_counter() - t0

    def predict_iter(self, source, *, stride: int | None = None, progress: bool = False) -> Iterator[Prediction]:
        """Stream :class:`Prediction` s for ``source`` (see foldcnn.infer.sources for the inputs
        accepted), in input order, with bounded memory. ``stride``: every stride-th video frame
        (default: the options' stride).

        ``p.stats`` describes this call once the iterator is exhausted (end-to-end time includes
        the time the consumer spends between items). With ``workers > 0`` an iterable ``source``
        is drawn from a background thread, a few items ahead: do not refill a tensor it already
        yielded (or use ``workers=0``).
        """
        names = self.class_names
        for idx, src, frm, top, conf, probs in self._batches(source, stride, progress):
            for j, c in enumerate(top.tolist()):
                yield Prediction(idx[j], src[j], frm[j], c, names[c], conf[j], probs[j])

    def predict_to(self, writer, source, *, stride: int | None = None, progress: bool = False,
                   resume_after: int = -1) -> int:
        """Classify ``source`` straight into a :class:`PredictionWriter` (a batch of rows at a
        time, no Prediction objects: what ``foldcnn predict`` does); returns the rows written.
        The rows equal those of ``writer.write_all(p.predict_iter(source))``.

        ``resume_after``: skip the inputs (images, video frames) at positions up to this one, as
        written by an earlier run (foldcnn.infer.journal.ResumableWriter records it): image files
        there are not decoded, frames are decoded but not run. Batches end at fold boundaries of
        their fold stream, so an earlier run's last batch does too, and the images after it fold
        as they did then: the rows equal the rest of an uninterrupted run's."""
        for idx, src, frm, top, conf, _ in self._batches(source, stride, progress, resume_after):
            writer.write_batch(idx, src, frm, top.tolist(), conf, self.class_names)
        return writer.rows

    def predict(self, images, *, stride: int | None = None, progress: bool = False) -> list[Prediction]:
        """All :class:`Prediction` s for ``images`` (any input predict_iter accepts), in input order."""
        return list(self.predict_iter(images, stride=stride, progress=progress))

    def predict_arrays(self, images) -> tuple[np.ndarray, np.ndarray]:
        """Fast path: images (N, C, H, W) uint8 (or float in [0, 1]; numpy NHWC too), any N >= 0
        -> (class indices int64 (N,), probabilities float32 (N, K)), in input order. No
        Prediction objects and no worker threads; results equal those of ``predict``."""
        x = as_nchw(images, self.input_shape)
        n = x.shape[0]
        stats = self.stats = self._new_stats()
        t0 = time.perf_counter()
        probs = np.empty((n, self.num_classes), np.float32)
        pos = 0
        # In the calling thread: converting an in-memory tensor is cheap (~1-3 us per image) and
        # measured, it cost about twice the CPU when handed to worker threads.
        chunks = ordered_map(iter_jobs(x, self._spec), workers=0)
        try:
            for _, _, _, p in self._run(self._stream(chunks, stats), stats, ahead=False):
                probs[pos:pos + len(p)] = p
                pos += len(p)
        finally:
            chunks.close()
            stats.seconds_total = time.perf_counter() - t0
        return probs.argmax(axis=1).astype(np.int64), probs

    def __repr__(self) -> str:
        return (f"Predictor(fold={self.fold}, num_classes={self.num_classes}, input_shape={self.input_shape}, "
                f"backend={self.stats.backend}/{self.stats.precision}, batch_size={self.batch_size}, "
                f"partial={self.partial!r})")

