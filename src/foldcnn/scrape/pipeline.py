"""The scrape job: videos -> frames decoded once -> every region's crops -> its folded CNN -> rows, events.

    with Scraper(load_layout("layout.json")) as s:
        for item in s.run(["match.mp4"]):
            if isinstance(item, Event): ...          # an event that ended
            else: item["region"], item["class_name"]  # a row: RESULT_COLUMNS + region, time_s

Grouping: each (video, region) is its own fold stream. A region's crops are folded f at a time
in frame order, exactly as ``foldcnn predict`` folds that region's crops given in frame order
(the last fold of a video padded), so a region's answers never depend on another region or
another video. Regions that share a checkpoint share one engine (one Predictor): their full
folds go through it in one call. Rows come out in frame order, one per (frame, region), the
regions in layout order. A live input (``-``, a URL) does not wait for fold-mates for long: a
region's partial fold that has waited ``max_wait_ms`` since its oldest frame arrived is run
padded, so a reading is never held back; a file is read as fast as it decodes and never does
this (its grouping is always predict's).
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from foldcnn.data.readers import DataReadError
from foldcnn.data.resize import resize_rgb
from foldcnn.errors import FoldcnnError, UsageError
from foldcnn.infer.results import RESULT_COLUMNS, result_row
from foldcnn.scrape.events import Event, EventTracker
from foldcnn.scrape.layout import Layout, LayoutError, Region
from foldcnn.scrape.sources import ON_LAG, FrameFeed

__all__ = ["SCRAPE_COLUMNS", "ScrapeOptions", "ScrapeStats", "Scraper", "StreamBrokenError", "scrape"]

SCRAPE_COLUMNS = (*RESULT_COLUMNS, "region", "time_s")
FILE_RUN = 64  # crops a region gathers from a file before its engine runs them (whole folds)
LATENCIES_KEPT = 100_000


class StreamBrokenError(FoldcnnError, RuntimeError):
    """A video that broke mid-way: every row before the break was delivered; names source and frame."""


@dataclass(frozen=True)
class ScrapeOptions:
    """How the stream is read and turned into events (the models' options: PredictOptions)."""

    stride: int = 1  # every stride-th frame
    keyframes: bool = False  # only the key frames (every stride-th of them)
    hold: int = 3  # readings in a row before a value counts as an event
    max_wait_ms: float = 100.0  # live inputs: longest a partial fold waits for fold-mates
    on_lag: str = "drop"  # live inputs the models cannot keep up with: drop frames or block the reader
    scale_layout: bool = False  # accept frames of another size than the layout's, scaling its boxes

    def __post_init__(self) -> None:
        for name in ("stride", "hold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"{name} must be an int >= 1, got {v!r}")
        if not isinstance(self.max_wait_ms, (int, float)) or self.max_wait_ms < 0:
            raise UsageError(f"max_wait_ms must be a number >= 0, got {self.max_wait_ms!r}")
        if self.on_lag not in ON_LAG:
            raise UsageError(f"on_lag must be one of {', '.join(ON_LAG)}, got {self.on_lag!r}")


@dataclass
class ScrapeStats:
    """What a scrape did. Seconds on the caller's clock: ``decode`` the waits for decoded frames,
    ``crop`` cutting and resizing, ``model`` inside the engines, ``write`` the consumer's time
    between rows (writing them), ``other`` the rest."""

    frames: int = 0
    rows: int = 0
    events: int = 0
    dropped_frames: int = 0
    padded_crops: int = 0
    seconds_total: float = 0.0
    seconds_decode: float = 0.0
    seconds_decode_work: float = 0.0  # the decoding threads' own time
    seconds_crop: float = 0.0
    seconds_model: float = 0.0
    seconds_write: float = 0.0
    engines: dict = field(default_factory=dict)  # checkpoint -> backend, precision, fold, crops, padded
    sources: list = field(default_factory=list)  # per video: name, frames, dropped, rate, frame_size
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=LATENCIES_KEPT), repr=False)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds_total if self.seconds_total > 0 else 0.0

    def stages(self) -> dict[str, dict[str, float]]:
        wall = self.seconds_total
        parts = {"read/decode": self.seconds_decode, "crop": self.seconds_crop, "model": self.seconds_model,
                 "write": self.seconds_write}
        parts["other"] = max(0.0, wall - sum(parts.values()))
        return {k: {"seconds": s, "frames_per_s": self.frames / s if s > 0 else 0.0,
                    "share": s / wall if wall > 0 else 0.0} for k, s in parts.items()}

    def latency_ms(self) -> dict | None:
        """Arrival of a frame -> its rows, for live inputs (p50, p99, max), None when not measured."""
        if not self.latencies_ms:
            return None
        a = np.asarray(self.latencies_ms)
        return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max()),
                "frames": int(a.size)}

    def to_dict(self) -> dict:
        return {"frames": self.frames, "rows": self.rows, "events": self.events,
                "dropped_frames": self.dropped_frames, "padded_crops": self.padded_crops,
                "seconds_total": self.seconds_total, "seconds_decode_work": self.seconds_decode_work,
                "frames_per_s": self.frames_per_s, "stages": self.stages(), "engines": self.engines,
                "sources": self.sources, "latency_ms": self.latency_ms()}


class _Engine:
    """One checkpoint's Predictor, shared by every region that names it."""

    def __init__(self, checkpoint: str, options) -> None:
        from foldcnn.infer import Predictor

        self.checkpoint = checkpoint
        self.predictor = Predictor.from_checkpoint(checkpoint, options)
        self.fold = self.predictor.fold
        self.input_shape = self.predictor.input_shape
        self.names = self.predictor.class_names
        s = self.predictor.stats
        self.info = {"backend": s.backend, "precision": s.precision, "fold": self.fold, "crops": 0, "padded": 0,
                     "seconds_model": 0.0}

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (n, C, H, W) crops, whole folds of f except a stream's last -> (classes, confidences)."""
        top, probs = self.predictor.predict_arrays(crops)
        st = self.predictor.stats
        self.info["crops"] += st.images
        self.info["padded"] += st.padded_images
        self.info["seconds_model"] += st.seconds_model
        return top, probs[np.arange(len(top)), top]


class _RegionStream:
    """One (video, region): its crops waiting for the engine and its answers waiting for their row."""

    def __init__(self, region: Region, engine: _Engine, source: str, hold: int) -> None:
        self.region, self.engine = region, engine
        self.crops: list[np.ndarray] = []
        self.waiting = 0
        self.answers: deque = deque()  # (class index, confidence), in frame order
        self.events = EventTracker(source, region.name, hold)

    def add(self, crops: np.ndarray) -> None:
        """uint8 (k, 3, h, w) crops of the region, in frame order."""
        want = tuple(self.engine.input_shape[1:])
        if tuple(crops.shape[2:]) != want:  # the function and mode training uses (foldcnn.data.resize)
            crops = np.stack([resize_rgb(np.ascontiguousarray(c.transpose(1, 2, 0)), want, self.region.resize)
                              .transpose(2, 0, 1) for c in crops])
        self.crops.append(np.ascontiguousarray(crops))
        self.waiting += len(crops)

    def take(self, flush: bool) -> np.ndarray | None:
        """The crops to run now: every whole fold (all of them with ``flush``), in frame order."""
        n = self.waiting if flush else self.waiting - self.waiting % self.engine.fold
        if n == 0:
            return None
        allc = np.concatenate(self.crops) if len(self.crops) > 1 else self.crops[0]
        rest = allc[n:]
        self.crops, self.waiting = ([rest] if len(rest) else []), len(rest)
        return allc[:n]


class _VideoRun:
    """One video being scraped: its feed, its region streams, and the frames whose rows are not out yet."""

    def __init__(self, scraper: Scraper, video: str, index0: int) -> None:
        self.scraper, self.video, self.index0 = scraper, video, index0
        opts, self.stats = scraper.options, scraper.stats
        self.used: list[Layout] = []  # the layout for the video's frame size (scaled with scale_layout)
        self.feed = FrameFeed(video, self.boxes_for, opts.stride, opts.keyframes, opts.on_lag)
        self.record = {"source": self.feed.source, "frames": 0, "dropped_frames": 0, "fps": self.feed.rate,
                       "frame_size": None}
        self.stats.sources.append(self.record)
        self.streams: list[_RegionStream] = []
        self.waiting: deque = deque()  # (frame number, index, arrival) of frames whose rows are not out yet
        self.max_wait = opts.max_wait_ms / 1000.0

    def boxes_for(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        opts = self.scraper.options
        self.used.append(self.scraper.layout.for_frame(width, height, opts.scale_layout, f"video {self.video}"))
        return [r.box for r in self.used[-1].regions]

    def timeout(self) -> float | None:
        """How long a live input may wait for its next frame before partial folds run padded."""
        if self.feed.live and self.waiting and any(s.waiting for s in self.streams):
            oldest = min(a for _, _, a in self.waiting)
            return max(0.0, oldest + self.max_wait - time.perf_counter())
        return None

    def add(self, item: tuple[list[int], list[np.ndarray], float]) -> None:
        """A batch of decoded frames' region crops from the feed."""
        numbers, crops, arrived = item
        t_crop = time.perf_counter()
        if not self.streams:
            self.record["frame_size"] = list(self.feed.cropper.frame_size)
            self.streams = [_RegionStream(r, self.scraper.engines[r.checkpoint], self.feed.source,
                                          self.scraper.options.hold) for r in self.used[0].regions]
        for s, c in zip(self.streams, crops):
            s.add(c)
        self.stats.seconds_crop += time.perf_counter() - t_crop
        for k, number in enumerate(numbers):
            self.waiting.append((number, self.index0 + self.record["frames"] + k, arrived))
        self.record["frames"] += len(numbers)
        self.stats.frames += len(numbers)

    def run_engines(self, flush: bool) -> None:
        for engine in self.scraper.engines.values():
            mine = [s for s in self.streams if s.engine is engine]
            if not flush and not self.feed.live and max(s.waiting for s in mine) < FILE_RUN:
                continue
            parts = [(s, s.take(flush)) for s in mine]
            parts = [(s, c) for s, c in parts if c is not None]
            if not parts:
                continue
            if flush:  # partial folds pad separately: one call per stream keeps each its own fold stream
                answers = [engine.run(c) for _, c in parts]
            else:
                top, conf = engine.run(np.concatenate([c for _, c in parts]) if len(parts) > 1 else parts[0][1])
                cuts = np.cumsum([len(c) for _, c in parts])[:-1]
                answers = list(zip(np.split(top, cuts), np.split(conf, cuts)))
            for (s, _), (t, c) in zip(parts, answers):
                s.answers.extend(zip(t.tolist(), c.tolist()))

    def emit(self) -> Iterator[dict | Event]:
        """The rows (and the events they end) of every waiting frame all of whose regions are answered."""
        stats, rate = self.stats, self.feed.rate
        while self.waiting and all(s.answers for s in self.streams):
            number, index, arrived = self.waiting.popleft()
            t = None if rate is None else round(number / rate, 6)
            for s in self.streams:
                c, conf = s.answers.popleft()
                name = s.engine.names[c]
                row = result_row(index, self.feed.source, number, name, c, conf)
                row["region"], row["time_s"] = s.region.name, t
                stats.rows += 1
                yield row
                event = s.events.add(number, t or 0.0, name, row["confidence"])
                if event is not None:
                    stats.events += 1
                    yield event
            if self.feed.live:
                stats.latencies_ms.append((time.perf_counter() - arrived) * 1000.0)

    def flush(self) -> Iterator[dict | Event]:
        """Run every partial fold (padded) and emit what it answers."""
        self.run_engines(flush=True)
        yield from self.emit()

    def close(self) -> None:
        self.feed.close()
        self.record["dropped_frames"] = self.feed.dropped
        self.stats.dropped_frames += self.feed.dropped
        self.stats.seconds_decode_work += self.feed.seconds_decode


class Scraper:
    """Engines for a layout's checkpoints, ready to scrape videos (see the module docstring).

    ``predict_options``: a :class:`foldcnn.infer.PredictOptions` for every engine (backend,
    precision, threads, batch size). Refuses, one sentence each: a missing or unloadable
    checkpoint, a model that does not take RGB (3-channel) crops."""

    def __init__(self, layout: Layout, options: ScrapeOptions | None = None, predict_options=None, *,
                 log=None) -> None:
        from foldcnn.infer.options import PredictOptions

        self.layout, self.options = layout, options or ScrapeOptions()
        opts = (predict_options or PredictOptions()).replace(workers=0)
        self.log = log or (lambda msg: None)
        self.engines: dict[str, _Engine] = {}
        try:
            for region in layout.regions:
                if region.checkpoint not in self.engines:
                    self.engines[region.checkpoint] = self._engine(region, opts)
                engine = self.engines[region.checkpoint]
                if engine.input_shape[0] != 3:
                    raise LayoutError(f"region {region.name!r} of {layout.path}: its model {region.checkpoint} "
                                      f"takes {engine.input_shape[0]}-channel images but video frames are RGB "
                                      "(3 channels); use a model trained on RGB crops")
        except BaseException:
            self.close()
            raise
        self.stats = ScrapeStats()

    @staticmethod
    def _engine(region: Region, opts) -> _Engine:
        from pathlib import Path

        if not Path(region.checkpoint).is_dir():
            raise LayoutError(f"region {region.name!r}: checkpoint {region.checkpoint} does not exist (a folder "
                              "with model.safetensors and config.json; --checkpoints NAME=PATH replaces a name)")
        try:
            return _Engine(region.checkpoint, opts)
        except FoldcnnError as e:
            raise LayoutError(f"region {region.name!r}: cannot load checkpoint {region.checkpoint}: "
                              f"{str(e).rstrip('.')}") from None

    def close(self) -> None:
        """Close the engines (again: nothing)."""
        for engine in getattr(self, "engines", {}).values():
            engine.predictor.close()
        self.engines = {}

    def __enter__(self) -> Scraper:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------ running
    def run(self, videos: Sequence[str]) -> Iterator[dict | Event]:
        """Rows (dicts, :data:`SCRAPE_COLUMNS`) and ended :class:`Event` s for ``videos``, in
        frame order, each video after the one before. ``self.stats`` describes the run. A
        video that breaks mid-way raises :class:`StreamBrokenError` after its rows and events
        up to the break."""
        if isinstance(videos, (str, bytes)) or not hasattr(videos, "__iter__"):
            videos = [videos]
        self.stats = stats = ScrapeStats()
        for e in self.engines.values():
            e.info.update(crops=0, padded=0, seconds_model=0.0)
        stats.engines = {c: e.info for c, e in self.engines.items()}
        t0 = time.perf_counter()
        index = 0
        try:
            for video in videos:
                for item in self._video(str(video), index):
                    t_out = time.perf_counter()
                    yield item
                    stats.seconds_write += time.perf_counter() - t_out
                index = stats.frames
        finally:
            stats.seconds_total = time.perf_counter() - t0
            stats.seconds_model = sum(e.info["seconds_model"] for e in self.engines.values())
            stats.padded_crops = sum(e.info["padded"] for e in self.engines.values())

    def _video(self, video: str, index0: int) -> Iterator[dict | Event]:
        stats = self.stats
        run = _VideoRun(self, video, index0)
        try:
            while True:
                timeout = run.timeout()
                t_wait = time.perf_counter()
                try:
                    item = run.feed.get(timeout)
                except queue.Empty:
                    stats.seconds_decode += time.perf_counter() - t_wait
                    yield from run.flush()
                    continue
                except DataReadError as e:
                    stats.seconds_decode += time.perf_counter() - t_wait
                    yield from run.flush()
                    yield from self._close_events(run.streams)
                    raise StreamBrokenError(f"{str(e).rstrip('.')}; the rows of the {run.record['frames']} frame(s) "
                                            f"before the break of {run.feed.name} were delivered") from None
                stats.seconds_decode += time.perf_counter() - t_wait
                if item is None:
                    break
                run.add(item)
                run.run_engines(flush=False)
                yield from run.emit()
            yield from run.flush()
            yield from self._close_events(run.streams)
        finally:
            run.close()

    def _close_events(self, streams: list[_RegionStream]) -> Iterator[Event]:
        for s in streams:
            event = s.events.close()
            if event is not None:
                self.stats.events += 1
                yield event


def scrape(videos, layout: Layout | str, options: ScrapeOptions | None = None, predict_options=None,
           **overrides) -> Iterator[dict | Event]:
    """Rows and events of ``videos`` (paths, ``"-"``, URLs) read with ``layout`` (a Layout or a
    layout JSON path); ``overrides`` name ScrapeOptions fields. See :class:`Scraper`."""
    from dataclasses import replace

    from foldcnn.scrape.layout import load_layout

    if not isinstance(layout, Layout):
        layout = load_layout(layout)
    opts = replace(options or ScrapeOptions(), **overrides)
    with Scraper(layout, opts, predict_options) as s:
        yield from s.run(videos)
