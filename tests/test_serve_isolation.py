"""--isolation auto (foldcnn.serve.isolation): a checkpoint trained with cross-slot decay inf is
served with folds filled across requests, and its answers equal the isolated ones; any other
folded checkpoint keeps request isolation."""

import json
import math
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from foldcnn.checkpoints import save_checkpoint  # noqa: E402
from foldcnn.models import create_model  # noqa: E402
from foldcnn.infer.options import PredictOptions  # noqa: E402
from foldcnn.serve import ServeConfig, checkpoint_fold_invariant, create_app  # noqa: E402
from foldcnn.serve.isolation import probe_fold_invariance, resolve_isolation  # noqa: E402
from test_serve import LiveServer, png, random_images  # noqa: E402

F = 4


def checkpoint(tmp_path, invariant: bool, record: bool = True):
    """A random-weight f=4 apex-squad-count checkpoint; ``invariant``: its cross-slot weights zeroed
    as training with --cross-slot-decay inf leaves them, and so recorded in config.json."""
    from foldcnn.train.symmetry import shrink_cross_slot_, tie_fold_slots_, untie_fold_slots_

    torch.manual_seed(0)
    model = create_model("apex-squad-count", fold=F)
    tie_fold_slots_(model, F)
    if invariant:
        shrink_cross_slot_(model, 0.0)
    untie_fold_slots_(model)  # as training saves it: plain weights
    train = {"cross_slot_decay": math.inf if invariant else 0.0, "tie_slots": True}
    path = tmp_path / ("inv" if invariant else "mix")
    save_checkpoint(path, model.eval(), [f"n{i}" for i in range(model.num_classes)],
                    extra={"train_config": train} if record else {})
    return path


def test_the_record_is_read_from_config_json(tmp_path):
    inv, mix = checkpoint(tmp_path, True), checkpoint(tmp_path, False)
    assert "Infinity" in (inv / "config.json").read_text()  # how json writes inf
    assert checkpoint_fold_invariant(inv) and not checkpoint_fold_invariant(mix)
    assert not checkpoint_fold_invariant(tmp_path / "missing")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"extra": {"train_config": {"cross_slot_decay": 1e9}}}))
    assert not checkpoint_fold_invariant(tmp_path / "odd")
    assert resolve_isolation("auto", True) == "none" and resolve_isolation("auto", False) == "request"
    assert resolve_isolation("key", True) == "key"


def test_auto_picks_none_only_for_an_invariant_model_that_passes_the_probe(tmp_path):
    from foldcnn.infer import Predictor

    inv = Predictor.from_checkpoint(checkpoint(tmp_path, True), workers=0, batch_size=64)
    mix = Predictor.from_checkpoint(checkpoint(tmp_path, False), workers=0, batch_size=64)
    assert probe_fold_invariance(inv.predict_arrays, F, inv.input_shape)
    assert not probe_fold_invariance(mix.predict_arrays, F, mix.input_shape)
    assert create_app(inv, ServeConfig()).state.isolation == "none"
    assert create_app(mix, ServeConfig()).state.isolation == "request"
    # a record the model does not live up to (here: claimed for the mixing model) falls back to request
    assert create_app(mix, ServeConfig(), fold_invariant=True).state.isolation == "request"
    assert create_app(inv, ServeConfig(isolation="request")).state.isolation == "request"


def test_folds_filled_across_requests_give_the_isolated_answers(tmp_path):
    """Five clients at once with requests of 1-3 images: with auto (none: folds shared across
    requests) every image gets exactly the answer it gets alone, and folds were shared."""
    from foldcnn.infer import Predictor

    path = checkpoint(tmp_path, True)
    served = Predictor.from_checkpoint(path, workers=0, batch_size=64)
    offline = Predictor.from_checkpoint(path, workers=0, batch_size=64)
    imgs = random_images(10, served.input_shape, seed=11)
    alone = [offline.predict_arrays(np.ascontiguousarray(a.transpose(2, 0, 1))[None]) for a in imgs]
    app = create_app(served, ServeConfig(PredictOptions(batch_size=64), max_wait_ms=200))
    assert app.state.isolation == "none"
    parts = [[0], [1, 2], [3, 4, 5], [6], [7, 8, 9]]
    got = {}

    def post(ids):
        r = httpx.post(f"{srv.url}/v1/classify", timeout=30,
                       files=[("f", (f"{i}.png", png(imgs[i]), "image/png")) for i in ids])
        got[tuple(ids)] = r.json()["results"]

    with LiveServer(app) as srv:
        threads = [threading.Thread(target=post, args=(ids,)) for ids in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for ids in parts:
        for row, i in zip(got[tuple(ids)], ids):
            k, probs = alone[i]
            assert row["class_index"] == int(k[0])
            assert row["confidence"] == pytest.approx(float(probs[0, k[0]]), abs=2e-6)
    stats = app.state.batcher.stats
    assert stats.padded_images < len(parts) * (F - 1)  # request isolation would pad each request
    assert max(stats.batch_sizes) > 3  # requests shared a batch (and folds)
