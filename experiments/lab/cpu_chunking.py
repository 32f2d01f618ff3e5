"""CPU chunk size against throughput, from the main thread and from a worker thread.

    python experiments/lab/cpu_chunking.py lol-gold-fraction --backend eager --precision fp32 --mib 0 8 16 24 30
    python experiments/lab/cpu_chunking.py lol-gold-fraction --backend compile --precision bf16 --mib 0 24

For each chunk size (``FOLDCNN_CPU_CHUNK_MIB``; 0 = one call for the whole batch) and fold (1 and
4): a backend for calls of ``--batch-size`` images, timed for ``--seconds`` from the main thread and
then from a new thread (``foldcnn serve`` runs its model in a thread pool), two warm-up calls each.
Prints images/s and the chunk in folded inputs. One process, so the glibc setting of
foldcnn.memory is on throughout.
"""

from __future__ import annotations

import argparse
import os
import threading

import numpy as np
import torch

from foldcnn.backends import create_backend
from foldcnn.backends.torch_backends import CPU_CHUNK_ENV
from foldcnn.bench.timing import WallTimer, time_block
from foldcnn.models import create_model


def images_per_s(run, images: int, seconds: float) -> float:
    run()
    run()
    calls, elapsed = time_block(run, seconds, WallTimer())
    return calls * images / elapsed


def in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn()))
    t.start()
    t.join()
    return out["v"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--backend", default="eager", choices=["eager", "compile"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--mib", type=float, nargs="+", default=[0, 8, 16, 24, 30])
    p.add_argument("--batch-size", type=int, default=4096, help="images per call")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=1.5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print("| chunk MiB | f | chunk (folded inputs) | main thread images/s | worker thread images/s |")
    print("|---|---|---|---|---|")
    for mib in a.mib:
        os.environ[CPU_CHUNK_ENV] = f"{mib:g}"
        for fold in (1, 4):
            backend = create_backend(create_model(a.model, fold=fold), a.backend, precision=a.precision,
                                     max_batch=a.batch_size // fold, threads=a.threads)
            x = np.random.default_rng(0).random((a.batch_size // fold, *backend.folded_input_shape), dtype=np.float32)
            main_rate = images_per_s(lambda: backend.run(x), a.batch_size, a.seconds)
            thread_rate = in_thread(lambda: images_per_s(lambda: backend.run(x), a.batch_size, a.seconds))
            chunk = "whole batch" if backend.chunk is None else str(backend.chunk)
            print(f"| {mib:g} | {fold} | {chunk} | {main_rate:,.0f} | {thread_rate:,.0f} |", flush=True)
            backend.close()


if __name__ == "__main__":
    main()
