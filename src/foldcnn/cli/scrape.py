"""`foldcnn scrape`: read game streams once, every screen region through its folded CNN, to rows and events."""

from __future__ import annotations

import argparse
import sys

from foldcnn.cli.common import HelpFormatter, CLIError
from foldcnn.cli.options import (
    add_json_flag,
    add_options,
    add_predict_options,
    config_from_args,
    predict_options,
    write_json_output,
)

# Options of the models that a scrape cannot honour, and why (they get no flag).
UNSUPPORTED = {
    "workers": "frames are decoded once, in one thread per video, ahead of the models",
    "decoders": "frames are decoded once, in one thread per video, ahead of the models",
    "partial": "a stream's last partial fold is padded, so a region's rows equal predict's on its crops",
    "fallback": "a stream's last partial fold is padded, so a region's rows equal predict's on its crops",
    "on_error": "a broken stream keeps its rows up to the break and exits 1",
    "resize": "each region's crop is resized to its model's input (the layout's \"resize\" names the mode)",
    "resize_mode": "the layout names each region's mode (\"resize\": bilinear or nearest)",
    "max_pixels": "frames are video frames",
}


def _summary_lines(stats, out: str, events: str | None) -> list[str]:
    s = stats
    lines = [f"{s.frames:,} frames, {s.rows:,} rows, {s.events:,} events in {s.seconds_total:.2f} s: "
             f"{s.frames_per_s:,.0f} frames/s end to end"]
    for ck, e in s.engines.items():
        lines.append(f"  model {ck}: {e['backend']}/{e['precision']}, fold {e['fold']}, {e['crops']:,} crops, "
                     f"{e['padded']} padded")
    for name, st in s.stages().items():
        if name == "other" and st["share"] < 0.05:
            continue
        lines.append(f"  {name}: {st['seconds']:.2f} s, {st['frames_per_s']:,.0f} frames/s, "
                     f"{st['share']:.0%} of wall time")
    if s.seconds_decode_work > 0:
        lines.append(f"  decoding threads: {s.seconds_decode_work:.2f} s, {s.frames / s.seconds_decode_work:,.0f} "
                     "frames/s per decoder")
    lat = s.latency_ms()
    if lat:
        lines.append(f"  arrival -> rows: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms")
    lines.append(f"dropped {s.dropped_frames} frame(s) (--on-lag drop: the models fell behind the stream)"
                 if s.dropped_frames else "dropped 0 frames")
    lines.append(f"wrote {out}" + (f" and {events}" if events else ""))
    return lines


def _check_flags(args: argparse.Namespace) -> None:
    """Combinations of flags that cannot work, refused before any video is opened."""
    if args.videos.count("-") > 1:
        raise CLIError("standard input (-) can be read once; give - at most once")
    if args.out == "-" and args.json == "-":
        raise CLIError("--out - and --json - both write to standard output; send one of them to a file")
    if args.events is not None and not args.events.lower().endswith(".csv"):
        raise CLIError(f"--events must end in .csv, got {args.events!r}")
    if args.truth and not args.plots:
        raise CLIError("--truth is drawn by --plots; add --plots")
    if args.plots and args.out == "-":
        raise CLIError("--plots are written beside --out; give --out a file")
    if args.address and args.engine != "ray":
        raise CLIError("--address is only used with --engine ray")
    if args.resume and not _journaled(args):
        raise CLIError("--resume continues a local scrape of video files into a .csv or .jsonl --out (its "
                       "journal): live input (- or a URL) cannot be replayed, and --engine ray, Parquet and "
                       "standard output keep no journal")


def _journaled(args: argparse.Namespace) -> bool:
    """Whether the run keeps a resume journal: local runs over files, written to CSV or JSONL."""
    live = any(v == "-" or "://" in v for v in args.videos)
    return args.engine != "ray" and not live and str(args.out).lower().endswith((".csv", ".jsonl"))


def _fingerprint(args: argparse.Namespace, layout, scrape_opts, options) -> dict:
    """What a scrape's rows depend on, for --resume: the videos, the layout, each model's weights
    (by their bytes) and the options that change rows."""
    import hashlib
    from pathlib import Path

    def digest(path: str) -> str:
        p = Path(path)
        files = sorted(f for f in p.rglob("*") if f.is_file() and "onnx-cache" not in f.parts) if p.is_dir() else [p]
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes())
        return h.hexdigest()

    checkpoints = sorted({r.checkpoint for r in layout.regions})
    return {"videos": [str(Path(v).resolve()) for v in args.videos], "layout": layout.to_dict(),
            "models": {c: digest(c) for c in checkpoints}, "scrape": dict(vars(scrape_opts)),
            "predict": options.to_dict()}


def _write_all(args: argparse.Namespace, produced, layout, plot, fingerprint: dict | None):
    """Rows (and events) to their files as they come, flushed per frame for live input and committed
    to the resume journal every COMMIT_FRAMES frames for files; returns the StreamBrokenError that
    ended a broken stream (its rows up to the break are the output), or None."""
    from foldcnn.scrape.events import EVENT_COLUMNS, Event
    from foldcnn.scrape.outputs import COMMIT_FRAMES, ScrapeJournal, TableWriter
    from foldcnn.scrape.pipeline import SCRAPE_COLUMNS, StreamBrokenError

    keep = fingerprint is not None and args.resume
    rows = TableWriter(args.out, SCRAPE_COLUMNS, keep_partial=keep)
    events = TableWriter(args.events, EVENT_COLUMNS, formats={".csv": "csv"}, keep_partial=keep) if args.events \
        else None
    live = rows.to_stdout or any(v == "-" or "://" in v for v in args.videos)
    journal = ScrapeJournal(rows, events, fingerprint, resume=args.resume) if fingerprint is not None else None
    skip_rows, skip_events = (journal.skip_rows, journal.skip_events) if journal else (0, 0)
    broken, frames = None, 0
    try:
        for item in produced:
            if isinstance(item, Event):
                if skip_events:  # written before the run that is resumed was killed
                    skip_events -= 1
                elif events is not None:
                    events.write(item.to_dict())
                    if live:
                        events.flush()
                continue
            if plot is not None:
                plot.add(item)
            if skip_rows:
                skip_rows -= 1
                continue
            rows.write(item)
            if item["region"] == layout.regions[-1].name:  # a frame's rows are out
                frames += 1
                if live:
                    rows.flush()
                if journal is not None and frames % COMMIT_FRAMES == 0:
                    journal.commit()
    except StreamBrokenError as e:
        broken = e
    except BaseException:
        if journal is not None:
            journal.commit()  # what was written is kept for --resume
        rows.close(ok=False)
        if events is not None:
            events.close(ok=False)
        raise
    rows.close()
    if events is not None:
        events.close()
    if journal is not None:
        journal.finish()
    return broken


def _cmd_scrape(args: argparse.Namespace) -> int:
    from foldcnn.scrape.layout import load_layout, parse_checkpoint_map
    from foldcnn.scrape.pipeline import ScrapeOptions, Scraper

    options = predict_options(args)
    _check_flags(args)
    scrape_opts = config_from_args(ScrapeOptions, args)
    layout = load_layout(args.layout, parse_checkpoint_map(args.checkpoints))
    plot = None
    if args.plots:
        from foldcnn.scrape.plots import ReadingsPlot, read_truth

        truth = read_truth(args.truth) if args.truth else None
        plot = ReadingsPlot()
    with Scraper(layout, scrape_opts, options) as scraper:  # checks every checkpoint here, also for Ray
        if args.engine == "ray":
            from foldcnn.scrape.pipeline import ScrapeStats
            from foldcnn.scrape.ray_engine import scrape_ray

            scraper.close()
            scraper.stats = ScrapeStats()
            produced = scrape_ray(args.videos, layout, scrape_opts, options, address=args.address,
                                  stats=scraper.stats)
        else:
            produced = scraper.run(args.videos)
        fingerprint = _fingerprint(args, layout, scrape_opts, options) if _journaled(args) else None
        broken = _write_all(args, produced, layout, plot, fingerprint)
        stats = scraper.stats
    plots = plot.write(str(args.out).rsplit(".", 1)[0], truth) if plot is not None else []
    if args.json != "-" and args.out != "-":
        for line in _summary_lines(stats, args.out, args.events):
            print(line)
        if plots:
            print("plots: " + ", ".join(str(p) for p in plots))
    if args.json is not None:
        write_json_output({"out": args.out, "events_out": args.events, "layout": layout.to_dict(),
                           "options": {**options.to_dict(), **vars(scrape_opts)}, **stats.to_dict(),
                           "error": None if broken is None else str(broken)}, args.json)
    if broken is not None:
        print(f"foldcnn scrape: error: {broken}", file=sys.stderr)
        return 1
    return 0


def _add_scrape(sub) -> None:
    from foldcnn.scrape.pipeline import ScrapeOptions

    p = sub.add_parser(
        "scrape", help="read game streams once: every screen region through its folded CNN, to readings and events",
        formatter_class=HelpFormatter,
        description="Decodes each frame once, cuts every region of the layout from it and classifies each region's "
        "crops with its checkpoint, each (video, region) its own fold stream. Writes one row per (frame, region) "
        "in frame order: index, source, frame, class_name, class_index, confidence, region, time_s. "
        "docs/scrape.md has the layout format.")
    p.add_argument("videos", nargs="+", metavar="VIDEO",
                   help="video files, - (a container stream on standard input, e.g. MPEG-TS piped from ffmpeg) or "
                        "URLs FFmpeg opens (rtsp://, http(s)://, udp://); read one after another")
    p.add_argument("--layout", required=True, metavar="L",
                   help="layout JSON: {\"frame_size\": [W, H], \"regions\": [{\"name\", \"box\": [x, y, w, h], "
                        "\"checkpoint\"}, ...]}")
    p.add_argument("--checkpoints", metavar="NAME=PATH,...",
                   help="replace the layout's checkpoint NAME by PATH (e.g. a task name from 'foldcnn data screens')")
    p.add_argument("--out", required=True, help="rows: .csv, .jsonl or .parquet; - for JSONL on standard output")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run over video files into the same .csv/.jsonl --out (and --events): "
                        "its OUT.journal says which rows are durable; the videos are scraped again and the rows "
                        "already written are not written twice, so the files end as an uninterrupted run's")
    p.add_argument("--events", metavar="EVENTS.csv",
                   help="write events: source, region, value, start_frame, end_frame, start_s, end_s, min_confidence")
    p.add_argument("--plots", action="store_true",
                   help="a PNG per region beside --out (OUT.REGION.png): its reading over time (needs matplotlib)")
    p.add_argument("--truth", metavar="TRUTH.csv",
                   help="with --plots: draw the truth too (frame, region, class; as 'foldcnn data screens' writes)")
    add_options(p, ScrapeOptions, group_title="events and live input (foldcnn.scrape.ScrapeOptions)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: one Ray task per video on a Ray cluster, the same rows")
    p.add_argument("--address", default=None, help="Ray cluster address for --engine ray (None: start one locally)")
    add_predict_options(p, unsupported=UNSUPPORTED, group_title="model options (every region's engine)")
    add_json_flag(p, what="the run's summary (counts, per-stage seconds, engines, dropped frames, latency)")
    p.set_defaults(func=_cmd_scrape)


COMMANDS = [_add_scrape]
