"""PNG folders end to end with decoding processes from the fork server (the library's choice) or
forked from the caller (docs/benchmarks.md, "end to end").

    python experiments/lab/decoder_start_method.py --checkpoint CKPT --pngs DIR [--rounds 5] [--pairs 2]

One warm Predictor per run (engine built, the first 64 images predicted), then ``--rounds`` passes of
``predict_to`` over the whole folder, as `foldcnn predict` writes rows; runs alternate between the two
start methods, ``--pairs`` of each. Prints images/s per pass.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def one_run(mode: str, checkpoint: str, pngs: str, rounds: int, precision: str) -> None:
    import foldcnn.infer.pipeline as pipeline
    from foldcnn.infer import PredictionWriter, Predictor

    if mode == "fork":
        pipeline.process_pool = lambda w: ProcessPoolExecutor(w, mp_context=mp.get_context("fork")) if w >= 1 else None
    files = sorted(str(f) for f in Path(pngs).rglob("*.png"))
    rates = []
    with Predictor.from_checkpoint(checkpoint, backend="ort", precision=precision, batch_size=1024) as p:
        p.predict(files[:64])
        for _ in range(rounds):
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp, PredictionWriter(str(Path(tmp) / "rows.csv")) as w:
                p.predict_to(w, pngs)
            rates.append(round(p.stats.images / (time.perf_counter() - t0)))
    print(mode, rates, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--pngs", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--one", choices=("fork", "forkserver"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one_run(args.one, args.checkpoint, args.pngs, args.rounds, args.precision)
        return
    for _ in range(args.pairs):
        for mode in ("fork", "forkserver"):  # each run its own process: a fresh interpreter, a fresh pool
            subprocess.run([sys.executable, __file__, "--one", mode, "--checkpoint", args.checkpoint, "--pngs",
                            args.pngs, "--rounds", str(args.rounds), "--precision", args.precision], check=True)


if __name__ == "__main__":
    main()
