"""End to end at the hardware's rate (docs/benchmarks.md, "End to end"): pipeline efficiency and folded/original ratios.

    foldcnn data game lol-gold-fraction --out /tmp/e2e/game --train-size 10 --val-size 10 --test-size 8192
    foldcnn data video --out /tmp/e2e/video --frames 3000
    python experiments/published/end_to_end.py --pngs /tmp/e2e/game/test --video /tmp/e2e/video/video.mp4 --work /tmp/e2e

For random-weight checkpoints (lol-gold-fraction 22x52 for PNGs and arrays, noscope-coral 50x50
for the video; f=1 and f=4; ORT fp32 and int8) it measures, per input kind:

* decode: seconds per image on ONE core (a child process pinned to one CPU), the pipeline's own
  reader (PNG: foldcnn.infer.sources.decode_files; video: iter_video_frames at the model's
  size; arrays: reading the .npy pieces into a uint8 batch);
* model: images/s of the Predictor's own engine session on a pre-folded float batch of
  ``--batch`` images, all cores (warm-up, median of ``--trials`` blocks of >= 1 s, as
  ``foldcnn bench`` times);
* end to end: a warm Predictor (engine built, decoders started: start-up excluded) classifying the
  whole input and writing the CSV rows, as ``foldcnn predict`` does; median of ``--trials``;
* efficiency = end-to-end images/s / ideal, ideal = 1 / (decode_s / cores + model_s);
* where the CPU goes: CPU seconds per image of the model alone (all its threads), of decoding on
  one core, and end to end in this process and in the decoding processes, and how many cores the
  end-to-end run kept busy; "overhead" is the CPU end to end spends beyond decode + model.

Then the start-up of ``foldcnn predict`` on one PNG (graph cached: the second run onwards),
median of ``--trials`` processes (that child decodes with whatever is installed). Prints markdown
tables; ``--json`` writes the numbers. ``--pillow-only`` decodes the PNGs with Pillow where pyspng
(the ``png`` extra, libspng) is installed, for the comparison.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from foldcnn.checkpoints import save_checkpoint
from foldcnn.fold import fold_images
from foldcnn.infer import PredictionWriter, Predictor
from foldcnn.models import create_model

TASKS = {"png": "lol-gold-fraction", "arrays": "lol-gold-fraction", "video": "noscope-coral"}


def cores() -> int:
    return len(os.sched_getaffinity(0))


def checkpoint(work: Path, task: str, fold: int) -> Path:
    out = work / f"ck-{task}-f{fold}"
    if not (out / "config.json").is_file():
        torch.manual_seed(fold)
        m = create_model(task, fold=fold)
        rng = np.random.default_rng(0)
        calib = torch.from_numpy(rng.integers(0, 256, (256, *m.input_shape), dtype=np.uint8))
        save_checkpoint(out, m, [str(i) for i in range(m.num_classes)], calibration_images=calib)
    return out


# ------------------------------------------------------------------------- decode on one core
def _decode_seconds(kind: str, source: str, shape, out) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    from foldcnn.infer.sources import InputSpec, decode_files

    spec = InputSpec(tuple(shape))
    t0 = time.perf_counter()
    if kind == "png":
        paths = sorted(str(p) for p in Path(source).rglob("*.png"))
        n = 0
        for a in range(0, len(paths), 32):
            n += len(decode_files(paths[a:a + 32], spec)[1])
    elif kind == "video":
        from foldcnn.data.readers import iter_video_frames

        n = sum(1 for _ in iter_video_frames(source, input_size=tuple(shape[1:])))
    else:
        from foldcnn.infer.array_files import iter_array_file

        buf = None
        n = 0
        for piece in iter_array_file(source, 1024):
            buf = np.array(piece, copy=True)
            n += len(buf)
    out.put((time.perf_counter() - t0) / n)


def decode_s_per_image(kind: str, source: str, shape) -> float:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_decode_seconds, args=(kind, source, shape, q))
    p.start()
    value = q.get()
    p.join()
    return value


# ------------------------------------------------------------------------------ model only
def decoder_cpu_seconds(p: Predictor) -> float:
    """CPU seconds (user + system) the Predictor's decoding processes have used so far (Linux)."""
    pool = getattr(getattr(p, "_processes", None), "_pool", None)
    total = 0.0
    for pid in list(getattr(pool, "_processes", None) or {}):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def model_images_per_s(p: Predictor, batch: int, trials: int) -> tuple[float, float]:
    """(images/s, CPU seconds per image over all the engine's threads) of the model alone."""
    x = fold_images(torch.rand(batch, *p.input_shape), p.fold).numpy()
    p.backend.run(x)
    rates, cpu = [], []
    for _ in range(trials):
        calls, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < 1.0:
            p.backend.run(x)
            calls += 1
        rates.append(calls * batch / (time.perf_counter() - t0))
        cpu.append((time.process_time() - c0) / (calls * batch))
    return statistics.median(rates), statistics.median(cpu)


def end_to_end(p: Predictor, source, out: Path, trials: int) -> tuple[float, dict, dict]:
    """(median images/s, the last run's stats, its CPU profile: CPU seconds per image in this
    process (engine, batching, writing) and in the decoding processes, and cores kept busy)."""
    rates, stats, cpu = [], None, {}
    for _ in range(trials):
        t0, c0, d0 = time.perf_counter(), time.process_time(), decoder_cpu_seconds(p)
        with PredictionWriter(out) as w:
            p.predict_to(w, source)  # what foldcnn predict does: rows a batch at a time
        wall, n = time.perf_counter() - t0, p.stats.images
        main_s, dec_s = time.process_time() - c0, decoder_cpu_seconds(p) - d0
        rates.append(n / wall)
        stats = p.stats.to_dict()
        cpu = {"main_cpu_s_per_image": main_s / n, "decoders_cpu_s_per_image": dec_s / n,
               "cores_busy": (main_s + dec_s) / wall}
    return statistics.median(rates), stats, cpu


def startup_seconds(ck: Path, png: Path, precision: str, work: Path, trials: int) -> float:
    cmd = [str(Path(sys.executable).parent / "foldcnn"), "predict", str(ck), "--input", str(png), "--out",
           str(work / "one.csv"), "--backend", "ort", "--precision", precision, "--quiet"]
    # A user's install has byte-compiled modules: let this run write them (some sandboxes set
    # PYTHONDONTWRITEBYTECODE, which would add the compile time of every module to each start).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(cmd, check=True, capture_output=True, env=env)  # builds and caches the graph, writes .pyc
    times = []
    for _ in range(trials):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pngs", required=True, help="folder of PNG crops (22x52)")
    ap.add_argument("--video", default=None, help="a video file (skipped if not given)")
    ap.add_argument("--work", default="/tmp/e2e", help="checkpoints, the .npy file and outputs go here")
    ap.add_argument("--kinds", default="png,arrays,video")
    ap.add_argument("--folds", default="1,4")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--decoders", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-startup", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--result", action="store_true", help="also write results/end-to-end-efficiency_CPU_COMMIT.json")
    ap.add_argument("--pillow-only", action="store_true",
                    help="decode PNGs with Pillow even where pyspng (the png extra) is installed")
    args = ap.parse_args()
    if args.pillow_only:
        from foldcnn.data import readers

        readers._spng = False  # before any decoding process is forked: they inherit it
    from foldcnn.data.readers import fast_png_available

    print(f"PNG decoder: {'libspng (pyspng)' if fast_png_available() else 'Pillow'}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pngs = sorted(Path(args.pngs).rglob("*.png"))
    npy = work / "crops.npy"
    if not npy.is_file():
        from PIL import Image

        np.save(npy, np.stack([np.asarray(Image.open(f).convert("RGB")) for f in pngs]))
    for f in [*pngs, npy, *([Path(args.video)] if args.video else [])]:
        f.read_bytes()  # into the page cache: a cold first pass would be timed as decoding
    sources = {"png": str(Path(args.pngs)), "arrays": str(npy), "video": args.video}
    kinds = [k for k in args.kinds.split(",") if sources.get(k)]
    folds = [int(f) for f in args.folds.split(",")]
    precisions = args.precisions.split(",")
    rows = []
    for kind in kinds:
        task = TASKS[kind]
        shape = create_model(task).input_shape
        decode_s = decode_s_per_image(kind, sources[kind], shape)
        for precision in precisions:
            for fold in folds:
                ck = checkpoint(work, task, fold)
                with Predictor.from_checkpoint(ck, backend="ort", precision=precision, batch_size=args.batch,
                                               workers=args.workers, decoders=args.decoders,
                                               threads=args.threads) as p:
                    p.predict([str(x) for x in pngs[:64]] if kind == "png" else np.zeros((8, *shape), np.uint8))
                    model, model_cpu = model_images_per_s(p, args.batch, args.trials)
                    e2e, stats, cpu = end_to_end(p, sources[kind], work / "out.csv", args.trials)
                model_s = 1 / model
                ideal = 1 / (decode_s / cores() + model_s)
                rows.append({"kind": kind, "task": task, "fold": fold, "precision": precision,
                             "decode_images_per_s_one_core": 1 / decode_s, "model_images_per_s": model,
                             "e2e_images_per_s": e2e, "ideal_images_per_s": ideal, "efficiency": e2e / ideal,
                             "images": stats["images"], "stages": stats["stages"],
                             "model_cpu_s_per_image": model_cpu, "decode_cpu_s_per_image": decode_s, **cpu})
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()
                                  if k != "stages"}), flush=True)
    print(f"\n{cores()} cores; decoders={args.decoders}, workers={args.workers}, threads={args.threads}\n")
    print("| input | model | precision | f | decode 1 core images/s | model images/s | end to end images/s "
          "| ideal | efficiency |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['task']} | {r['precision']} | {r['fold']} | {r['decode_images_per_s_one_core']:,.0f} "
              f"| {r['model_images_per_s']:,.0f} | {r['e2e_images_per_s']:,.0f} | {r['ideal_images_per_s']:,.0f} "
              f"| {r['efficiency']:.2f} |")
    print("\nCPU time per image (microseconds, all threads and processes): the parts measured alone, and end to "
          "end split by process; overhead = end to end - (decode + model)\n")
    print("| input | precision | f | decode (1 core) | model (engine threads) | end to end: this process | "
          "decoding processes | overhead | cores busy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        us = {k: 1e6 * r[k] for k in ("decode_cpu_s_per_image", "model_cpu_s_per_image", "main_cpu_s_per_image",
                                      "decoders_cpu_s_per_image")}
        over = us["main_cpu_s_per_image"] + us["decoders_cpu_s_per_image"] - us["decode_cpu_s_per_image"] \
            - us["model_cpu_s_per_image"]
        print(f"| {r['kind']} | {r['precision']} | {r['fold']} | {us['decode_cpu_s_per_image']:.0f} | "
              f"{us['model_cpu_s_per_image']:.0f} | {us['main_cpu_s_per_image']:.0f} | "
              f"{us['decoders_cpu_s_per_image']:.0f} | {over:+.0f} | {r['cores_busy']:.2f} |")
    print("\n| input | precision | folded/original end to end | folded/original model only |\n|---|---|---|---|")
    for kind in kinds:
        for precision in precisions:
            by = {r["fold"]: r for r in rows if r["kind"] == kind and r["precision"] == precision}
            if 1 in by and 4 in by:
                print(f"| {kind} | {precision} | {by[4]['e2e_images_per_s'] / by[1]['e2e_images_per_s']:.2f} "
                      f"| {by[4]['model_images_per_s'] / by[1]['model_images_per_s']:.2f} |")
    startup = {}
    if not args.no_startup:
        for precision in precisions:
            for fold in folds:
                s = startup_seconds(checkpoint(work, "lol-gold-fraction", fold), pngs[0], precision, work, args.trials)
                startup[f"f{fold} {precision}"] = s
                print(f"start-up, foldcnn predict on one PNG, f={fold} {precision} (graph cached): {s:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "startup_s": startup, "cores": cores(),
                                               "args": vars(args)}, indent=2))
    if args.result:
        write_table(rows, startup, args.trials)


LABELS = {"png": "PNG folder (libspng)", "arrays": ".npy arrays", "video": "video"}


def write_table(rows: list[dict], startup: dict, trials: int) -> None:
    """results/end-to-end-efficiency_CPU_COMMIT.json, the table docs/benchmarks.md renders."""
    from foldcnn.results import write_result

    columns = [{"title": "input", "cell": "{input}"}, {"title": "precision", "cell": "{precision}"},
               {"title": "f", "cell": "{fold}"},
               {"title": "decode, 1 core, images/s", "cell": "{decode_1core_images_per_s:,}"},
               {"title": "model only", "cell": "{model_only_images_per_s:,}"},
               {"title": f"end to end (median of {trials})", "cell": "{end_to_end_images_per_s:,}"},
               {"title": "efficiency", "cell": "**{efficiency:.2f}**"}]
    table = [{"input": LABELS[r["kind"]], "precision": r["precision"], "fold": r["fold"],
              "decode_1core_images_per_s": round(r["decode_images_per_s_one_core"]),
              "model_only_images_per_s": round(r["model_images_per_s"]),
              "end_to_end_images_per_s": round(r["e2e_images_per_s"]), "efficiency": r["efficiency"]} for r in rows]
    path = write_result("results", "end-to-end-efficiency", columns=columns, rows=table, startup_s=startup,
                        description="foldcnn predict end to end against its parts: PNG folders, .npy arrays and a "
                        "video, f=1 and f=4, ONNX Runtime fp32 and int8; efficiency = end-to-end images/s / "
                        "(1 / (decode_s / cores + model_s))",
                        command="python experiments/published/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
