"""Scrape a generated game stream: per-region frame accuracy and event F1 against its truth, and
frames/s of the scrape against decoding alone, folded region models against unfolded ones.

    foldcnn data screens --game apex --seconds 60 --fps 30 --out screens/apex
    foldcnn train --task apex-squad-count --fold 4 --threads 1 --epochs 60 --out runs/apex-f4   # and --fold 1
    python experiments/published/scrape_measure.py --screens screens/apex \
        --checkpoints apex-squad-count=runs/apex-f4/checkpoint \
        --compare apex-squad-count=runs/apex-f1/checkpoint --threads 1

Accuracy: a region's rows against truth.csv, frame by frame. Events: the scrape's events
(``--hold``) against the truth's (every run of one class other than ``other``); an event
matches a true one of the same region and value when their frame spans overlap by at least
``--overlap`` of their union (intersection over union), each true event matched at most once.
Where the misreadings come from: each region's wrong frames as runs (first and last frame, true
and read class), and the same models' frame accuracy on the drawn frames before encoding
(``foldcnn.data.screens.screen_frames``: the codec's share of the errors), and with ``--also-crf
N`` on the same match encoded at crf N.

Speed, in rounds that alternate the runs (medians), as frames per wall second and frames per CPU
second of the process (all its threads: what a shared machine's load cannot inflate): decode only (frames decoded, nothing
converted), decode + the regions' RGB (the scrape's own decoding stage: the floor), decode +
full-frame RGB (what cutting from whole frames would cost), the scrape with the region models
(``--checkpoints``) and with the comparison models (``--compare``), and ``predict`` run once per
region on that region's crops cut beforehand (``.npy``, cut once outside the timing: its rows
written to CSV), the region models. Scrapers and Predictors are built once before the rounds (the
steady state of a long stream); one more scrape with the region models builds its engines inside
the timing (what a one-off run of this 60-s stream costs).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from foldcnn.infer.options import PredictOptions  # noqa: E402
from foldcnn.results import write_result  # noqa: E402
from foldcnn.scrape import Event, EventTracker, ScrapeOptions, Scraper, load_layout  # noqa: E402
from foldcnn.scrape.layout import parse_checkpoint_map  # noqa: E402
from foldcnn.scrape.sources import FrameFeed  # noqa: E402


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def layout_task(screens: Path, region: str) -> str:
    regions = json.loads((screens / "layout.json").read_text())["regions"]
    return next((r.get("task", r["checkpoint"]) for r in regions if r["name"] == region), "")


def _truth(screens: Path) -> dict[tuple[int, str], str]:
    with open(screens / "truth.csv") as f:
        return {(int(r["frame"]), r["region"]): r["class"] for r in csv.DictReader(f)}


def _true_events(truth: dict, regions: list[str]) -> list[Event]:
    out = []
    for region in regions:
        t = EventTracker("truth", region, hold=1)
        frames = sorted(f for f, r in truth if r == region)
        out += [e for f in frames if (e := t.add(f, 0.0, truth[(f, region)], 1.0)) is not None]
        if (e := t.close()) is not None:
            out.append(e)
    return out


def _iou(a: Event, b: Event) -> float:
    inter = min(a.end_frame, b.end_frame) - max(a.start_frame, b.start_frame) + 1
    union = max(a.end_frame, b.end_frame) - min(a.start_frame, b.start_frame) + 1
    return max(0, inter) / union


def event_f1(pred: list[Event], true: list[Event], overlap: float) -> dict:
    used: set[int] = set()
    hits = 0
    for p in pred:
        for i, t in enumerate(true):
            if i not in used and t.region == p.region and t.value == p.value and _iou(p, t) >= overlap:
                used.add(i)
                hits += 1
                break
    precision = hits / len(pred) if pred else 0.0
    recall = hits / len(true) if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "matched": hits, "predicted": len(pred),
            "true": len(true)}


def _trained(checkpoint: str) -> dict:
    """The region model's test top-1 on its task's generated crops and the command that trained it."""
    run = Path(checkpoint).parent / "run.json"
    if not run.is_file():
        return {"crop_test_top1": None, "train_command": None}
    d = json.loads(run.read_text())
    return {"crop_test_top1": d.get("test_metrics", {}).get("top1"), "train_command": d.get("command")}


def scrape_once(video: str, layout, opts: ScrapeOptions, popts: PredictOptions) -> tuple[list, list, dict]:
    with Scraper(layout, opts, popts) as s:
        items = list(s.run([video]))
        stats = s.stats.to_dict()
    rows = [i for i in items if not isinstance(i, Event)]
    return rows, [i for i in items if isinstance(i, Event)], stats


def agreement(rows: list[dict], reference: list[dict], layout) -> dict[str, float]:
    """Per region, the share of frames whose class is the one eager fp32 gives (rows in the same order)."""
    assert [(r["frame"], r["region"]) for r in rows] == [(r["frame"], r["region"]) for r in reference]
    out = {}
    for region in (r.name for r in layout.regions):
        pairs = [(a["class_index"], b["class_index"]) for a, b in zip(rows, reference) if a["region"] == region]
        out[region] = sum(a == b for a, b in pairs) / len(pairs)
    return out


def timed(fn) -> tuple[float, float]:
    """(frames per wall second, frames per CPU second of this process, all threads) of ``fn()``,
    which returns the frames it handled. CPU time is what a shared machine cannot inflate."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = fn()
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def decode_frames(video: str, layout, how: str) -> int:
    """Decode alone: 'none' (no conversion), 'regions' (the regions' RGB), 'full' (whole frames)."""
    import av

    from foldcnn.data.frames import rgb_converter

    if how == "regions":
        feed = FrameFeed(video, lambda w, h: [r.box for r in layout.regions])
        n = sum(len(numbers) for numbers, _, _ in feed)
        feed.close()
    else:
        convert = rgb_converter() if how == "full" else None
        n = 0
        with av.open(video) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for frame in c.decode(s):
                if convert is not None:
                    convert(frame)
                n += 1
    return n


def wrong_runs(rows: list[dict], truth: dict, region: str) -> list[list]:
    """[first frame, last frame, true class, read class] of each run of wrong readings."""
    out: list[list] = []
    for row in rows:
        t, got = truth[(row["frame"], region)], row["class_name"]
        if t == got:
            continue
        if out and out[-1][1] == row["frame"] - 1 and out[-1][2:] == [t, got]:
            out[-1][1] = row["frame"]
        else:
            out.append([row["frame"], row["frame"], t, got])
    return out


def renderings(rows: list[dict], truth: dict, region: str, fps: float) -> dict:
    """Distinct drawings a region's frames show, (panel look, true class), and those misread in any
    frame: a region keeps one look for LOOK_SECONDS, so one drawing fills many frames and the
    frame accuracy of one stream rests on this many independent drawings."""
    from foldcnn.data.screens import LOOK_SECONDS

    per = max(1, int(LOOK_SECONDS * fps))
    seen, wrong = set(), set()
    for row in rows:
        key = (row["frame"] // per, truth[(row["frame"], region)])
        seen.add(key)
        if row["class_name"] != key[1]:
            wrong.add(key)
    return {"drawings": len(seen), "misread_drawings": len(wrong)}


def quality(rows: list[dict], events: list[Event], truth: dict, layout, overlap: float, fps: float = 30.0) -> dict:
    regions = [r.name for r in layout.regions]
    per_region = {}
    for r in layout.regions:
        mine = [row for row in rows if row["region"] == r.name]
        right = sum(row["class_name"] == truth[(row["frame"], r.name)] for row in mine)
        per_region[r.name] = {"frames": len(mine), "frame_accuracy": right / len(mine) if mine else 0.0,
                              "checkpoint": r.checkpoint, **_trained(r.checkpoint),
                              "events": event_f1([e for e in events if e.region == r.name],
                                                 [e for e in _true_events(truth, [r.name])], overlap),
                              "wrong_runs": wrong_runs(mine, truth, r.name),
                              **renderings(mine, truth, r.name, fps)}
    return {"regions": per_region, "events": event_f1(events, _true_events(truth, regions), overlap)}


def unencoded_accuracy(manifest: dict, layout, popts: PredictOptions) -> dict:
    """Each region model's frame accuracy on the drawn frames before encoding (same match, same
    fold grouping as the scrape: the region's crops in frame order)."""
    import numpy as np

    from foldcnn.data.screens import screen_frames
    from foldcnn.infer import Predictor

    regions, frames = screen_frames(manifest["game"], seconds=manifest["seconds"], fps=manifest["fps"],
                                    size=tuple(manifest["size"]), seed=manifest["seed"])
    crops: dict[str, list] = {r["name"]: [] for r in regions}
    truth: dict[str, list] = {r["name"]: [] for r in regions}
    for frame, classes in frames:
        for r, c in zip(regions, classes):
            x, y, w, h = r["box"]
            crops[r["name"]].append(frame[y:y + h, x:x + w].transpose(2, 0, 1))
            truth[r["name"]].append(c)
    out = {}
    for r in layout.regions:
        with Predictor.from_checkpoint(r.checkpoint, popts) as p:
            top, _ = p.predict_arrays(np.stack(crops[r.name]))
            out[r.name] = float(np.mean([p.class_names[i] == t for i, t in zip(top.tolist(), truth[r.name])]))
    return out


def other_crf(screens: Path, crf: int, layout, opts: ScrapeOptions, popts: PredictOptions, overlap: float) -> dict:
    """The same match encoded at ``crf``: the region models' frame accuracy and events there."""
    import tempfile

    from foldcnn.data.screens import write_screens

    m = json.loads((screens / "manifest.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        write_screens(tmp, m["game"], seconds=m["seconds"], fps=m["fps"], size=tuple(m["size"]), seed=m["seed"],
                      crf=crf)
        rows, events, _ = scrape_once(str(Path(tmp) / "video.mp4"), layout, opts, popts)
        truth = _truth(Path(tmp))
    return quality(rows, events, truth, layout, overlap, m["fps"])


def cut_crops(video: str, layout, out: Path) -> dict[str, Path]:
    """Each region's crops of every frame, cut once (the scrape's own cutter), as REGION.npy."""
    import numpy as np

    feed = FrameFeed(video, lambda w, h: [r.box for r in layout.regions])
    parts: list[list] = [[] for _ in layout.regions]
    for _, crops, _ in feed:
        for k, c in enumerate(crops):
            parts[k].append(c)
    feed.close()
    paths = {}
    for r, p in zip(layout.regions, parts):
        paths[r.name] = out / f"{r.name}.npy"
        np.save(paths[r.name], np.concatenate(p))
    return paths


def predict_per_region(predictors: dict, crops: dict[str, Path], out: Path) -> int:
    """``foldcnn predict CHECKPOINT --input REGION.npy --out REGION.csv`` once per region, in this
    process, with each region's Predictor built beforehand: the crops read and classified, the rows
    written. Returns frames."""
    import numpy as np

    from foldcnn.infer.results import PredictionWriter

    frames = 0
    for name, p in predictors.items():
        with PredictionWriter(out / f"{name}.csv") as w:
            p.predict_to(w, str(crops[name]))
        frames = len(np.load(crops[name], mmap_mode="r"))
    return frames


def _frames(scraper, video: str) -> int:
    """Runs a built Scraper over the video; the frames it read."""
    for _ in scraper.run([video]):
        pass
    return scraper.stats.to_dict()["frames"]


def speed(video: str, sets: dict, opts: ScrapeOptions, popts: PredictOptions, rounds: int, tmp: Path) -> dict:
    """Frames per wall and per CPU second of each run, in alternating rounds. The scrapes and the
    per-region Predictors are built once, before the rounds (steady state, as on a long stream);
    ``scrape_main_with_start`` builds its engines inside the timing, as a one-off run does."""
    from contextlib import ExitStack

    from foldcnn.infer import Predictor

    layout = sets["main"]
    crops = cut_crops(video, layout, tmp)
    runs = {"decode_only": lambda: decode_frames(video, layout, "none"),
            "decode_regions_rgb": lambda: decode_frames(video, layout, "regions"),
            "decode_full_rgb": lambda: decode_frames(video, layout, "full")}
    with ExitStack() as stack:
        scrapers = {n: stack.enter_context(Scraper(lay, opts, popts)) for n, lay in sets.items()}
        for n, scraper in scrapers.items():
            runs[f"scrape_{n}"] = lambda s=scraper: _frames(s, video)
        runs["scrape_main_with_start"] = lambda: scrape_once(video, layout, opts, popts)[2]["frames"]
        predictors = {r.name: stack.enter_context(Predictor.from_checkpoint(r.checkpoint, popts))
                      for r in layout.regions}
        runs["predict_per_region"] = lambda: predict_per_region(predictors, crops, tmp)
        wall: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(rounds):
            for k, fn in runs.items():
                w, c = timed(fn)
                wall[k].append(w)
                cpu[k].append(c)
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    for m in (med, med_cpu):  # cutting the crops (a pass of its own) and then predict, per frame
        m["cut_then_predict"] = 1 / (1 / m["decode_regions_rgb"] + 1 / m["predict_per_region"])
    ratios = {}
    for label, m in (("wall", med), ("cpu", med_cpu)):
        for n in [*(f"scrape_{n}" for n in sets), "scrape_main_with_start", "predict_per_region"]:
            ratios[f"{label}: {n} / decode_regions_rgb"] = m[n] / m["decode_regions_rgb"]
            ratios[f"{label}: {n} / decode_only"] = m[n] / m["decode_only"]
        if "compare" in sets:
            ratios[f"{label}: scrape_main / scrape_compare"] = m["scrape_main"] / m["scrape_compare"]
        ratios[f"{label}: scrape_main / predict_per_region"] = m["scrape_main"] / m["predict_per_region"]
        ratios[f"{label}: scrape_main / cut_then_predict"] = m["scrape_main"] / m["cut_then_predict"]
    return {"frames_per_s": {"median": med, "rounds": wall}, "frames_per_cpu_s": {"median": med_cpu, "rounds": cpu},
            "ratios": ratios}


def accuracy_rows(result: dict, sets: dict, screens: Path, label: dict) -> list[dict]:
    rows = []
    runs = [(n, result[n]["quality"], result["screens"]["crf"]) for n in sets]
    if "also_crf" in result:
        runs.append(("main", result["also_crf"]["quality"], result["also_crf"]["crf"]))
    for n, q, crf in runs:
        for region, r in q["regions"].items():
            e = r["events"]
            unenc = result[n].get("unencoded_accuracy", {}).get(region)
            agree = result[n].get("agreement_with_eager_fp32", {}).get(region) if crf == result["screens"]["crf"] else None
            rows.append({"models": label[n], "video": f"crf {crf}", "region": region,
                         "task": layout_task(screens, region),
                         "crop_test_top1_pct": None if r["crop_test_top1"] is None else 100 * r["crop_test_top1"],
                         "unencoded_pct": "" if unenc is None else f"{100 * unenc:.2f}%",
                         "frame_accuracy_pct": 100 * r["frame_accuracy"], "event_f1": e["f1"],
                         "events_matched": e["matched"], "events_predicted": e["predicted"], "events_true": e["true"],
                         "drawings": f"{r['misread_drawings']} / {r['drawings']}",
                         "agreement": "" if agree is None else f"{100 * agree:.2f}%"})
    return rows


ACCURACY_COLUMNS = [{"title": "models", "cell": "{models}"}, {"title": "video", "cell": "{video}"},
                    {"title": "region (task)", "cell": "{region} ({task})"},
                    {"title": "crop test top-1", "cell": "{crop_test_top1_pct:.2f}%"},
                    {"title": "frame accuracy, frames before encoding", "cell": "{unencoded_pct}"},
                    {"title": "frame accuracy vs truth", "cell": "{frame_accuracy_pct:.2f}%"},
                    {"title": "event F1, --hold {hold}", "cell": "{event_f1:.3f}"},
                    {"title": "events matched / predicted / true",
                     "cell": "{events_matched} / {events_predicted} / {events_true}"},
                    {"title": "drawings misread / shown", "cell": "{drawings}"}]
SPEED_TITLES = {"decode_only": "decoding alone, no conversion", "decode_regions_rgb": "decoding + the regions' RGB",
                "decode_full_rgb": "decoding + whole frames' RGB", "scrape_main": "scrape, {main} models",
                "scrape_main_with_start": "scrape, {main} models, building its engines (a one-off 60-s run)",
                "scrape_compare": "scrape, {compare} models",
                "predict_per_region": "predict once per region on its pre-cut crops, {main} models",
                "cut_then_predict": "cutting the crops (decoding + regions' RGB) then predict per region "
                                    "(derived: the two times added)"}


def write_results(result: dict, sets: dict, screens: Path, args) -> None:
    game = result["screens"]["game"]
    details = {k: v for k, v in result.items() if k not in ("command", "date", "cpu", "commit")}
    label = {n: "f=" + "/".join(sorted({str(f) for f in result[n]["folds"].values()})) for n in sets}
    what = f"scrape-accuracy_{game}-60s-720p" if result["screens"]["frames"] == 1800 else f"scrape-accuracy_{game}"
    if (args.backend, args.precision) != ("eager", "fp32"):
        what += f"-{args.backend}-{args.precision}"
    if args.tag:
        what += f"-{args.tag}"
    cols = [dict(c, title=c["title"].format(hold=args.hold)) for c in ACCURACY_COLUMNS]
    if any("agreement_with_eager_fp32" in result[n] for n in sets):
        cols.append({"title": f"frames read as eager fp32 reads them ({args.backend} {args.precision})",
                     "cell": "{agreement}"})
    write_result(Path(args.out), what, description=f"foldcnn scrape on a generated {game} stream: per-region frame "
                 "accuracy and event F1 against its truth.csv", columns=cols,
                 rows=accuracy_rows(result, sets, screens, label), command=result["command"], details=details)
    med, med_cpu = result["frames_per_s"]["median"], result["frames_per_cpu_s"]["median"]
    speed_rows = [{"run": SPEED_TITLES[k].format(main=label["main"], compare=label.get("compare", "")),
                   "frames_per_cpu_s": med_cpu[k], "frames_per_s": med[k],
                   "vs_decode_regions_cpu": med_cpu[k] / med_cpu["decode_regions_rgb"]} for k in med]
    speed_cols = [{"title": "run", "cell": "{run}"},
                  {"title": f"frames per CPU second (median of {args.rounds})", "cell": "{frames_per_cpu_s:,.0f}"},
                  {"title": "/ decoding + regions' RGB", "cell": "{vs_decode_regions_cpu:.2f}"},
                  {"title": "frames per wall second (noisy on a shared machine)", "cell": "{frames_per_s:,.0f}"}]
    write_result(Path(args.out), what.replace("accuracy", "speed"), description=f"foldcnn scrape on a generated {game} "
                 "stream: frames per CPU second and per wall second against decoding alone and against predict run "
                 "once per region on pre-cut crops, in alternating rounds",
                 columns=speed_cols, rows=speed_rows, command=result["command"], details=details)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--screens", required=True, help="a folder from 'foldcnn data screens'")
    ap.add_argument("--checkpoints", required=True, help="TASK=CHECKPOINT,... the region models (e.g. f=4)")
    ap.add_argument("--compare", help="TASK=CHECKPOINT,... the models to compare against (e.g. f=1)")
    ap.add_argument("--also-crf", type=int, help="also scrape the same match encoded at this crf (region models)")
    ap.add_argument("--hold", type=int, default=3)
    ap.add_argument("--overlap", type=float, default=0.8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", default="eager", help="the region models' engine (default: eager)")
    ap.add_argument("--precision", default="fp32", help="their precision; other than eager fp32, the rows' agreement "
                    "with eager fp32 is measured too and the results files are named after the engine")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results"), help="the results folder")
    ap.add_argument("--tag", help="appended to the results files' names (e.g. which region models: 40k-cm32)")
    return ap.parse_args()


def main() -> None:
    import tempfile

    args = _args()
    screens = Path(args.screens)
    video, truth = str(screens / "video.mp4"), _truth(screens)
    popts = PredictOptions(backend=args.backend, precision=args.precision, threads=args.threads)
    opts = ScrapeOptions(hold=args.hold)
    sets = {"main": load_layout(screens / "layout.json", parse_checkpoint_map(args.checkpoints))}
    if args.compare:
        sets["compare"] = load_layout(screens / "layout.json", parse_checkpoint_map(args.compare))
    result = {"command": " ".join([sys.executable.split("/")[-1], *sys.argv]), "date": datetime.now(timezone.utc)
              .isoformat(timespec="seconds"), "cpu": _cpu(), "commit": _commit(), "load_before": _load(),
              "screens": json.loads((screens / "manifest.json").read_text()), "backend": args.backend,
              "precision": args.precision, "threads": args.threads, "hold": args.hold, "overlap_iou": args.overlap,
              "event_rule": "same region and value, frame spans with intersection over union >= overlap_iou"}
    for name, layout in sets.items():
        rows, events, stats = scrape_once(video, layout, opts, popts)
        result[name] = {"quality": quality(rows, events, truth, layout, args.overlap, result["screens"]["fps"]),
                        "first_run": stats,
                        "folds": {r.name: stats["engines"][r.checkpoint]["fold"] for r in layout.regions},
                        "unencoded_accuracy": unencoded_accuracy(result["screens"], layout, popts)}
        if (args.backend, args.precision) != ("eager", "fp32"):
            reference = scrape_once(video, layout, opts, PredictOptions(threads=args.threads))[0]
            result[name]["agreement_with_eager_fp32"] = agreement(rows, reference, layout)
    if args.also_crf is not None:
        result["also_crf"] = {"crf": args.also_crf, "quality": other_crf(screens, args.also_crf, sets["main"], opts,
                                                                         popts, args.overlap)}
    with tempfile.TemporaryDirectory() as tmp:
        result.update(speed(video, sets, opts, popts, args.rounds, Path(tmp)))
    result["load_after"] = _load()
    write_results(result, sets, screens, args)
    for name in sets:
        q = result[name]["quality"]
        print(name, {r: round(v["frame_accuracy"], 4) for r, v in q["regions"].items()},
              "event F1", round(q["events"]["f1"], 4), "unencoded", result[name]["unencoded_accuracy"],
              "agreement with eager fp32", result[name].get("agreement_with_eager_fp32"))
    print("frames per CPU s", {k: round(v, 1) for k, v in result["frames_per_cpu_s"]["median"].items()})
    print({k: round(v, 3) for k, v in result["ratios"].items()})


if __name__ == "__main__":
    main()
