"""A live stream on standard input: `foldcnn scrape -` fed an MPEG-TS stream paced at N frames/s,
reporting the time from a frame's arrival to its rows (p50, p99), the frames dropped
(--on-lag drop) and the highest rate held (no frame dropped, p99 <= 250 ms).

    python experiments/published/scrape_live.py --screens screens/apex \
        --checkpoints apex-squad-count=runs/apex-f4/checkpoint --seconds 20 --fps 30,60,120,240 \
        --threads 1

The stream is the screens' video remuxed to MPEG-TS (no re-encoding), its first ``--seconds``,
written to the scraper's standard input one frame's packet at a time at the frame's due time.
"Arrival" is when the frame came out of the decoder (scrape's own clock), so the latency
counts cropping, batching, the models and writing, not the pipe or the decoder's own delay; a
rate the decoder cannot follow shows instead as ``finished_after_last_packet_s`` (the process
still working, and exiting, after the last packet was sent).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments" / "published"))
sys.path.insert(0, str(ROOT / "src"))

from foldcnn.results import write_result  # noqa: E402
from scrape_measure import _commit, _cpu, _load  # noqa: E402


def ts_packets(video: str, frames: int) -> list[bytes]:
    """The video's first ``frames`` packets remuxed to MPEG-TS: the bytes to send with each."""
    import av

    out: list[bytes] = []
    buf = io.BytesIO()
    with av.open(video) as src, av.open(buf, "w", format="mpegts") as dst:
        s = src.streams.video[0]
        o = dst.add_stream_from_template(s)
        sent = 0
        for p in src.demux(s):
            if p.dts is None:
                continue
            p.stream = o
            dst.mux(p)
            data = buf.getvalue()
            out.append(data[sent:])
            sent = len(data)
            if len(out) == frames:
                break
    tail = buf.getvalue()[sent:]
    if tail:
        out.append(tail)
    return out


def run(packets: list[bytes], fps: float, layout: str, checkpoints: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        summary = os.path.join(tmp, "s.json")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.Popen([sys.executable, "-m", "foldcnn", "scrape", "-", "--layout", layout, "--checkpoints",
                                 checkpoints, "--out", os.path.join(tmp, "rows.csv"), "--threads", str(threads),
                                 "--json", summary], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
        time.sleep(8.0)  # the process starts (imports, models) before the stream does
        t0 = time.perf_counter()
        for k, data in enumerate(packets):
            wait = t0 + k / fps - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            proc.stdin.write(data)
            proc.stdin.flush()
        proc.stdin.close()
        sent = time.perf_counter()
        proc.wait(timeout=600)
        behind = time.perf_counter() - sent  # the rest of the work after the last packet, plus exiting
        s = json.loads(Path(summary).read_text())
    return {"fps": fps, "frames": s["frames"], "dropped_frames": s["dropped_frames"], "latency_ms": s["latency_ms"],
            "finished_after_last_packet_s": behind, "returncode": proc.returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--screens", required=True)
    ap.add_argument("--checkpoints", required=True)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", default="30,60,120,240", help="rates to feed, frames/s, comma list")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results"), help="the results folder")
    args = ap.parse_args()
    screens = Path(args.screens)
    manifest = json.loads((screens / "manifest.json").read_text())
    packets = ts_packets(str(screens / "video.mp4"), int(args.seconds * manifest["fps"]))
    result = {"command": " ".join([sys.executable.split("/")[-1], *sys.argv]), "date": time.strftime(
              "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": _cpu(), "commit": _commit(), "load_before": _load(),
              "screens": manifest, "frames_sent": len(packets), "runs": []}
    for fps in (float(v) for v in args.fps.split(",")):
        r = run(packets, fps, str(screens / "layout.json"), args.checkpoints, args.threads)
        result["runs"].append(r)
        print(r)
    held = [r["fps"] for r in result["runs"] if r["dropped_frames"] == 0 and r["latency_ms"]
            and r["latency_ms"]["p99"] <= 250]
    result["highest_fps_held"] = max(held) if held else None
    result["load_after"] = _load()
    rows = [{"fps": r["fps"], "frames": r["frames"], "dropped_frames": r["dropped_frames"],
             "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"], "max_ms": r["latency_ms"]["max"],
             "finished_after_last_packet_s": r["finished_after_last_packet_s"]} for r in result["runs"]]
    cols = [{"title": "rate fed", "cell": "{fps:.0f} fps"}, {"title": "frames", "cell": "{frames}"},
            {"title": "dropped", "cell": "{dropped_frames}"}, {"title": "arrival -> rows p50", "cell": "{p50_ms:.0f} ms"},
            {"title": "p99", "cell": "{p99_ms:.0f} ms"}, {"title": "max", "cell": "{max_ms:.0f} ms"},
            {"title": "done after the last packet", "cell": "{finished_after_last_packet_s:.1f} s"}]
    details = {k: v for k, v in result.items() if k not in ("command", "date", "cpu", "commit")}
    write_result(Path(args.out), f"scrape-live_{manifest['game']}", description="foldcnn scrape - fed a paced MPEG-TS "
                 "stream on standard input: arrival-to-rows latency and dropped frames per rate", columns=cols,
                 rows=rows, command=result["command"], details=details)
    print("highest fps held:", result["highest_fps_held"])


if __name__ == "__main__":
    main()
