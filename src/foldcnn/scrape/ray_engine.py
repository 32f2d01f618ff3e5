"""Scrape many streams on a Ray cluster: one Ray task per video, rows and events as local.

Each task runs a :class:`foldcnn.scrape.Scraper` on one video (its own engines, one per
checkpoint), so each (video, region) is the same fold stream as in a local scrape and the rows are
the same; the driver hands them back in input order, numbering ``index`` across the videos as a
local scrape does. Videos are files every node can read (a shared path); standard input and live
URLs are read locally only.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence

from foldcnn.errors import MissingExtraError, UsageError
from foldcnn.scrape.events import Event
from foldcnn.scrape.layout import Layout
from foldcnn.scrape.pipeline import ScrapeOptions, ScrapeStats, StreamBrokenError
from foldcnn.scrape.sources import is_live

__all__ = ["scrape_ray"]


def _one(video: str, layout: Layout, options: ScrapeOptions, predict_options) -> tuple[list, dict, str | None]:
    """What a Ray task runs: every row and event of one video, its stats, and the break, if any."""
    from foldcnn.scrape.pipeline import Scraper

    with Scraper(layout, options, predict_options) as s:
        items: list = []
        error = None
        try:
            items.extend(s.run([video]))
        except StreamBrokenError as e:
            error = str(e)
        return items, s.stats.to_dict(), error


def scrape_ray(videos: Sequence[str], layout: Layout, options: ScrapeOptions | None = None, predict_options=None, *,
               address: str | None = None, stats: ScrapeStats | None = None) -> Iterator[dict | Event]:
    """Rows and events of ``videos``, in input order, each video scraped by a Ray task.

    ``address=None`` starts a local Ray cluster and stops it after; an address joins a running
    one; a Ray session already open in this process is used as it is. ``stats`` (a ScrapeStats)
    is filled with the totals. A video that breaks mid-way raises StreamBrokenError after its
    rows, as locally."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError("--engine ray needs ray: pip install 'foldcnn[ray]'") from None
    if any(is_live(v) for v in videos):
        raise UsageError("--engine ray reads video files (a path every node can read); standard input and live URLs "
                         "are scraped locally")
    options = options or ScrapeOptions()
    threads = getattr(predict_options, "threads", None) or 1
    # Workers need not share the driver's working directory: give them absolute paths.
    shipped = dataclasses.replace(layout, regions=tuple(dataclasses.replace(r, checkpoint=os.path.abspath(r.checkpoint))
                                                        for r in layout.regions))
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    stats = stats if stats is not None else ScrapeStats()
    t0 = time.perf_counter()
    try:
        task = ray.remote(num_cpus=threads)(_one)
        refs = [task.remote(os.path.abspath(v), shipped, options, predict_options) for v in videos]
        offset = 0
        for video, ref in zip(videos, refs):
            items, st, error = ray.get(ref)
            source = str(os.path.normpath(video))
            for item in items:
                if isinstance(item, Event):
                    yield dataclasses.replace(item, source=source)
                else:
                    item["index"] += offset
                    item["source"] = source
                    yield item
            offset += st["frames"]
            stats.frames += st["frames"]
            stats.rows += st["rows"]
            stats.events += st["events"]
            stats.sources.extend({**s, "source": source} for s in st["sources"])
            for ck, e in st["engines"].items():
                into = stats.engines.setdefault(ck, {**e, "crops": 0, "padded": 0, "seconds_model": 0.0})
                for k in ("crops", "padded", "seconds_model"):
                    into[k] += e[k]
            if error is not None:
                raise StreamBrokenError(error)
    finally:
        stats.seconds_total = time.perf_counter() - t0
        if started:
            ray.shutdown()
