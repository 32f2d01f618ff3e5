"""Fold isolation in serving: with isolation "request" an image's answer does not depend on what
other clients send at the same time (foldcnn.serve.batcher, ServeConfig.isolation)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch

from foldcnn.errors import UsageError
from foldcnn.serve.batcher import FoldBatcher

F = 4


def mixing_predict(images: np.ndarray):
    """A stand-in folded model whose answers depend on fold-mates: class = fold's pixel sum % 5."""
    n = len(images)
    pad = -n % F
    v = np.concatenate([images.reshape(n, -1)[:, 0].astype(np.int64), np.zeros(pad, np.int64)])
    fold_class = v.reshape(-1, F).sum(1) % 5
    cls = np.repeat(fold_class, F)[:n]
    probs = np.zeros((n, 5), np.float32)
    probs[np.arange(n), cls] = 1
    return cls, probs


def _img(values):
    return np.asarray(values, np.uint8).reshape(-1, 1, 1, 1)


async def _answers(isolation: str, requests, keys=None, max_batch=16):
    async with FoldBatcher(mixing_predict, fold=F, max_batch=max_batch, max_wait_ms=20,
                           isolation=isolation) as b:
        keys = keys or [None] * len(requests)
        out = await asyncio.gather(*(b.submit(_img(r), key=k) for r, k in zip(requests, keys)))
    return [o[0].tolist() for o in out], b.stats


def test_request_isolation_answers_as_if_alone():
    mine = [1, 2, 3]
    alone, _ = asyncio.run(_answers("request", [mine]))
    crowd, stats = asyncio.run(_answers("request", [[7, 9], mine, [4, 4, 4, 4, 4]]))
    assert crowd[1] == alone[0]
    assert stats.padded_images >= 1 + 2  # the 2-image and 3-image requests padded to whole folds
    shared, _ = asyncio.run(_answers("none", [[7, 9], mine, [4, 4, 4, 4, 4]]))
    assert shared[1] != alone[0]  # without isolation a stranger's images change this answer


def test_requests_split_across_batches_keep_their_own_folds():
    big = list(range(1, 11))  # 10 images, batches of 8 slots
    alone, _ = asyncio.run(_answers("request", [big], max_batch=8))
    crowd, _ = asyncio.run(_answers("request", [[5], big, [6, 6]], max_batch=8))
    assert crowd[1] == alone[0]


def test_key_isolation_shares_folds_within_a_key_only():
    a1, a2, b = [1, 1], [2, 2], [3]
    together, _ = asyncio.run(_answers("key", [a1, a2, b], keys=["a", "a", "b"]))
    assert together[0] == together[1] == [(1 + 1 + 2 + 2) % 5] * 2  # same key: one fold
    assert together[2] == [3 % 5]  # the other key's image is folded alone


def test_isolation_mode_is_checked():
    with pytest.raises(UsageError, match="isolation"):
        FoldBatcher(mixing_predict, fold=F, isolation="tenant")


def test_same_image_same_answer_over_http_with_concurrent_clients(tmp_path):
    """A real folded model (random weights mix fold-mates) behind a loopback server: the same PNG
    gets the same answer alone and while three other clients send other images at once."""
    httpx = pytest.importorskip("httpx")
    from test_serve import LiveServer, png, random_images

    from foldcnn.infer import Predictor
    from foldcnn.models import create_model
    from foldcnn.infer.options import PredictOptions
    from foldcnn.serve import ServeConfig, create_app

    torch.manual_seed(0)
    model = create_model("apex-squad-count", fold=F)
    imgs = random_images(13, model.input_shape, seed=3)
    # A long batching window so the four requests share one batch; 11 images come first, so
    # without isolation the last request's image would sit in a fold with three strangers.
    app = create_app(Predictor(model, workers=0, batch_size=32), ServeConfig(PredictOptions(batch_size=32), max_wait_ms=600))
    assert app.state.batcher.isolation == "request"  # the default

    def post(url, arrays):
        r = httpx.post(f"{url}/v1/classify", timeout=30,
                       files=[("f", (f"{i}.png", png(a), "image/png")) for i, a in enumerate(arrays)])
        assert r.status_code == 200, r.text
        return [(g["class_index"], g["confidence"]) for g in r.json()["results"]]

    with LiveServer(app) as server:
        alone = post(server.url, imgs[:1])
        answers = {}
        others = [imgs[1:4], imgs[4:9], imgs[9:12]]
        threads = [threading.Thread(target=lambda k=k, a=a: answers.__setitem__(k, post(server.url, a)))
                   for k, a in enumerate(others)]
        for t in threads:
            t.start()
        time.sleep(0.25)  # the strangers' images are queued first
        mine = threading.Thread(target=lambda: answers.__setitem__("mine", post(server.url, imgs[:1])))
        mine.start()
        for t in (*threads, mine):
            t.join()
    (c0, p0), (c1, p1) = alone[0], answers["mine"][0]
    assert c1 == c0 and p1 == pytest.approx(p0, abs=2e-6)
