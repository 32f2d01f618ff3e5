"""Width rounding: paper's int() widths vs widths rounded up to a multiple of 8 or 16.

    .venv/bin/python experiments/published/width_rounding.py            # ~2 min on 2 cores

Times each (model, fold, channel_multiple) under ONNX Runtime (fp32, 2 threads, batch 1024
images), interleaving configurations across trials and reporting medians. The result chose
foldcnn.models.base.DEFAULT_CHANNEL_MULTIPLE (docs/widths.md).
"""

from __future__ import annotations

import io
import statistics
import sys
import time

import numpy as np
import torch

from foldcnn import count_params, create_model

MODELS = sys.argv[1:] or ["lol-gold-fraction", "sot-coin-count", "sot-timer"]
FOLDS = [1, 2, 3, 4]
MULTIPLES = [1, 8, 16]
BATCH_IMAGES = 1024
TRIALS = 5


def session(model):
    import onnxruntime as ort

    buf = io.BytesIO()
    x = torch.zeros(1, *model.folded_input_shape)
    torch.onnx.export(model.eval(), (x,), buf, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])


def main() -> None:
    configs = []
    for name in MODELS:
        for f in FOLDS:
            for m in MULTIPLES if f > 1 else [1]:
                model = create_model(name, fold=f, channel_multiple=m)
                widths = sorted({c.out_channels for c in model.modules() if isinstance(c, torch.nn.Conv2d)})
                x = np.random.rand(BATCH_IMAGES // f, *model.folded_input_shape).astype(np.float32)
                configs.append(((name, f, m, widths, count_params(model)), session(model), x))
    times = {c[0][:3]: [] for c in configs}
    for _ in range(TRIALS):
        for key, sess, x in configs:
            sess.run(None, {"x": x})  # warm-up inside the trial: caches, thread pool
            t0 = time.perf_counter()
            sess.run(None, {"x": x})
            times[key[:3]].append(time.perf_counter() - t0)
    print(f"{'model':20} {'fold':>4} {'multiple':>8} {'widths':16} {'params':>8} {'images/s':>9}")
    for key, _, _ in configs:
        ips = BATCH_IMAGES / statistics.median(times[key[:3]])
        print(f"{key[0]:20} {key[1]:>4} {key[2]:>8} {str(key[3]):16} {key[4]:>8} {ips:>9,.0f}")


if __name__ == "__main__":
    main()
