import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from foldcnn import create_model, fold_images, pad_to_fold, padded_count, unfold_logits
from foldcnn.data.readers import ImageReadError
from foldcnn.infer import (
    ImageSizeError,
    Prediction,
    PredictionWriter,
    Predictor,
    write_predictions,
)
from foldcnn.infer.arrays import resize_images
from foldcnn.infer.pipeline import ordered_map
from foldcnn.checkpoints import save_checkpoint

H, W, K = 12, 16, 5  # tiny game CNN: fast on a busy CPU
_MODELS: dict = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: tiny models gain nothing from more, and a busy machine punishes them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(fold: int, seed: int = 0):
    if (fold, seed) not in _MODELS:
        torch.manual_seed(seed)
        _MODELS[fold, seed] = create_model("lol-gold-fraction", fold=fold, num_classes=K, input_size=(H, W)).eval()
    return _MODELS[fold, seed]


def images(n: int, seed: int = 0, size=(H, W)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g)


def reference(model, x: torch.Tensor) -> np.ndarray:
    """The manual computation: folds of f in input order, last fold zero-padded, padded rows dropped."""
    f, n = model.fold, x.shape[0]
    xp, _ = pad_to_fold(x.float() / 255 if x.dtype == torch.uint8 else x, f)
    with torch.no_grad():
        logits = unfold_logits(model(fold_images(xp, f)), f)[:n]
    return torch.softmax(logits, dim=1).numpy()


def probs_of(preds: list[Prediction]) -> np.ndarray:
    return np.stack([p.probabilities for p in preds]) if preds else np.zeros((0, K), np.float32)


def close(a, b) -> None:
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)


def save_png(path, arr_hwc, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr_hwc).convert(mode) if mode else Image.fromarray(arr_hwc)).save(path)
    return path


# ------------------------------------------------------------------------- exact semantics
@pytest.mark.parametrize("f", [1, 2, 3, 4])
def test_every_count_equals_manual_fold_pad_unfold(f):
    model = tiny(f)
    with Predictor(model, batch_size=2 * f, workers=0) as p:
        for n in range(1, 3 * f + 2):
            x = images(n, seed=n)
            preds, want = p.predict(x), reference(model, x)
            assert [q.index for q in preds] == list(range(n))
            close(probs_of(preds), want)
            assert [q.class_index for q in preds] == want.argmax(1).tolist()
            assert p.stats.images == n and p.stats.padded_images == padded_count(n, f) - n
            assert p.stats.folded_inputs == padded_count(n, f) // f
            cls, probs = p.predict_arrays(x)
            close(probs, want)
            assert cls.dtype == np.int64 and cls.tolist() == probs.argmax(1).tolist()


@settings(max_examples=20, deadline=None)
@given(f=st.sampled_from([2, 3]), n=st.integers(0, 25), batch=st.integers(1, 12),
       workers=st.sampled_from([0, 2]), seed=st.integers(0, 10_000))
def test_results_do_not_depend_on_chunking_or_batch_size(f, n, batch, workers, seed):
    model, x = tiny(f), images(n, seed=seed)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, rng.integers(0, 6)), replace=False)) if n > 1 else []
    chunks = torch.tensor_split(x, list(cuts)) if n else []
    with Predictor(model, batch_size=batch, workers=workers) as p:
        streamed = list(p.predict_iter(iter(chunks)))
    with Predictor(model, batch_size=1024, workers=0) as p:
        whole = p.predict_arrays(x)[1]
    assert [q.index for q in streamed] == list(range(n))
    close(probs_of(streamed), whole)


def test_partial_last_fold_is_deterministic_and_folds_are_independent():
    f, n = 4, 9  # the last fold holds image 8 alone, padded with three zero images
    model, x = tiny(f), images(n, seed=3)
    results = []
    for batch, chunk in ((4, 9), (8, 2), (1024, 1), (12, 5)):
        with Predictor(model, batch_size=batch, workers=0) as p:
            results.append(probs_of(p.predict(list(torch.split(x, chunk)))))
    for r in results[1:]:
        close(r, results[0])
    # Only the images of its own fold change a result: rewrite fold 1 (images 4-7).
    y = x.clone()
    y[4:8] = images(4, seed=99)
    with Predictor(model, workers=0) as p:
        other = p.predict_arrays(y)[1]
    close(other[:4], results[0][:4])
    close(other[8:], results[0][8:])
    assert not np.allclose(other[4:8], results[0][4:8])


def test_empty_input_gives_empty_output():
    with Predictor(tiny(2), workers=2) as p:
        assert p.predict(torch.zeros(0, 3, H, W, dtype=torch.uint8)) == []
        assert p.predict([]) == []
        cls, probs = p.predict_arrays(torch.zeros(0, 3, H, W, dtype=torch.uint8))
        assert cls.shape == (0,) and probs.shape == (0, K)
        assert p.stats.images == 0 and p.stats.padding_waste == 0.0


def test_fallback_runs_leftovers_through_the_unfolded_model(tmp_path):
    f, n = 3, 8
    model, unfolded, x = tiny(f), tiny(1, seed=5), images(n, seed=8)
    with Predictor(model, batch_size=3, partial="fallback", fallback=unfolded, workers=0) as p:
        got = probs_of(p.predict(x))
        assert (p.stats.fallback_images, p.stats.padded_images, p.stats.images) == (2, 0, 8)
    close(got[:6], reference(model, x[:6]))
    close(got[6:], reference(unfolded, x[6:]))
    names = [f"c{i}" for i in range(K)]
    path = save_checkpoint(tmp_path / "fb", unfolded, names)
    with Predictor(model, names, partial="fallback", fallback=path, workers=0) as p:
        close(probs_of(p.predict(x)), got)


def test_fallback_errors(tmp_path):
    with pytest.raises(ValueError, match="needs --fallback"):
        Predictor(tiny(2), partial="fallback")
    with pytest.raises(ValueError, match="must be unfolded"):
        Predictor(tiny(2), partial="fallback", fallback=tiny(2))
    other = create_model("lol-gold-fraction", num_classes=K + 1, input_size=(H, W))
    with pytest.raises(ValueError, match="same task"):
        Predictor(tiny(2), partial="fallback", fallback=other)
    path = save_checkpoint(tmp_path / "fb", tiny(1), [f"x{i}" for i in range(K)])
    with pytest.raises(ValueError, match="classes"):
        Predictor(tiny(2), [f"c{i}" for i in range(K)], partial="fallback", fallback=path)
    with pytest.raises(ValueError, match="only used with partial='fallback'"):
        Predictor(tiny(2), partial="pad", fallback=tiny(1))
    assert Predictor(tiny(2), fallback=tiny(1)).partial == "fallback"  # as --fallback alone does in the CLI


# -------------------------------------------------------------------------------- inputs
def test_every_input_kind_gives_the_same_results(tmp_path):
    n = 7
    model, x = tiny(2), images(n, seed=11)
    hwc = x.permute(0, 2, 3, 1).numpy()
    paths = [save_png(tmp_path / "imgs" / f"{i:02d}.png", hwc[i]) for i in range(n)]
    with Predictor(model, batch_size=4, workers=2) as p:
        want = p.predict_arrays(x)[1]
        kinds = {
            "tensor": x, "float tensor": x.float() / 255, "numpy NCHW": x.numpy(), "numpy NHWC": hwc,
            "PIL": [Image.fromarray(a) for a in hwc], "paths": paths, "str paths": [str(q) for q in paths],
            "folder": tmp_path / "imgs", "glob": str(tmp_path / "imgs" / "*.png"),
            "3-D tensors": list(x), "chunks": iter([x[:3], x[3:]]), "mixed": [paths[0], x[1:3], Image.fromarray(hwc[3]),
                                                                              hwc[4], x[5], str(paths[6])],
        }
        for kind, source in kinds.items():
            preds = p.predict(source)
            assert [q.index for q in preds] == list(range(n)), kind
            # same pixels, same folds, same batches: bit-identical (uint8 / 255 == the float input)
            assert np.array_equal(probs_of(preds), want), kind
        assert [q.source for q in p.predict(tmp_path / "imgs")] == [str(q) for q in paths]
        assert all(q.source is None and q.frame is None for q in p.predict(x))


def test_video_frames_equal_the_decoded_pixels(tmp_path):
    pytest.importorskip("av")
    from foldcnn.data.readers import iter_video_frames
    from foldcnn.data.video import generate_video

    video = generate_video(tmp_path / "v", 21, seed=1, size=(32, 32), progress=False).video_path
    # frames are resized to the model's 12x16 with nearest neighbour by default, as load_video does
    frames = [(i, img) for i, img in iter_video_frames(video, input_size=(H, W), stride=2, resize="nearest")]
    pixels = torch.stack([img for _, img in frames])
    with Predictor(tiny(4), batch_size=8, workers=2) as p:
        preds = p.predict(video, stride=2)
        close(probs_of(preds), p.predict_arrays(pixels)[1])
        assert [q.frame for q in preds] == [i for i, _ in frames] == list(range(0, 21, 2))
        assert [q.index for q in preds] == list(range(11)) and {q.source for q in preds} == {str(video)}
        assert p.stats.padded_images == 1


def test_grey_rgba_and_palette_files_are_converted_to_rgb(tmp_path):
    rgb = images(1, seed=4)[0].permute(1, 2, 0).numpy()
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    files = {"grey": save_png(tmp_path / "g.png", grey), "rgba": save_png(tmp_path / "a.png", rgb, "RGBA"),
             "palette": save_png(tmp_path / "p.png", rgb, "P")}
    with Predictor(tiny(1), workers=0) as p:
        for path in files.values():
            want = np.asarray(Image.open(path).convert("RGB"))
            got = p.predict([path])[0].probabilities
            close(got, p.predict_arrays(want[None])[1][0])
        grey3 = np.repeat(grey[..., None], 3, axis=2)
        close(p.predict([files["grey"]])[0].probabilities, p.predict_arrays(grey3[None])[1][0])


def test_corrupt_file_raises_or_is_skipped_and_listed(tmp_path):
    x = images(5, seed=2).permute(0, 2, 3, 1).numpy()
    paths = [save_png(tmp_path / f"{i}.png", x[i]) for i in range(5)]
    paths[2].write_bytes(b"not a png")
    with Predictor(tiny(2), on_error="raise", workers=2) as p, pytest.raises(ImageReadError, match="2.png"):
        p.predict(paths)
    with Predictor(tiny(2), on_error="skip", workers=2) as p:
        preds = p.predict(paths)
        assert [q.index for q in preds] == [0, 1, 3, 4]
        assert [(s.index, s.source) for s in p.skipped] == [(2, str(paths[2]))] and p.stats.skipped == 1
        close(probs_of(preds), p.predict_arrays(x[[0, 1, 3, 4]])[1])
        missing = p.predict([paths[0], tmp_path / "gone.png"])
        assert len(missing) == 1 and p.skipped[0].source == str(tmp_path / "gone.png")


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_batches_before_a_corrupt_file_are_delivered_before_its_error(tmp_path, workers):
    """With the engine a batch ahead (workers > 0) or not, the rows delivered before an
    unreadable file fails the run are the same: every batch decoded before it."""
    from foldcnn.infer.sources import FILES_PER_JOB, FILES_PER_PROCESS_JOB

    per_job = FILES_PER_PROCESS_JOB if workers else FILES_PER_JOB  # workers > 0: decoding processes
    n = 2 * per_job + 8
    x = images(n, seed=9).permute(0, 2, 3, 1).numpy()
    paths = [save_png(tmp_path / f"{i:03d}.png", x[i]) for i in range(n)]
    bad = per_job + 5  # in the second decoding job: the first job's images all decode
    paths[bad].write_bytes(b"not a png")
    got = []
    with Predictor(tiny(2), on_error="raise", workers=workers, batch_size=4) as p:
        with pytest.raises(ImageReadError, match=f"{bad:03d}.png"):
            for q in p.predict_iter(paths):
                got.append(q.index)
    assert got == list(range(per_job))


def test_wrong_size_resizes_bilinear_or_raises(tmp_path):
    big = images(2, seed=6, size=(20, 30))
    path = save_png(tmp_path / "big.png", big[0].permute(1, 2, 0).numpy())
    want = np.asarray(Image.fromarray(big[0].permute(1, 2, 0).numpy()).resize((W, H), Image.Resampling.BILINEAR))
    with Predictor(tiny(1), workers=0) as p:
        close(p.predict([path])[0].probabilities, p.predict_arrays(want[None])[1][0])
        close(p.predict_arrays(big)[1], p.predict_arrays(resize_images(big, (H, W)))[1])
    with Predictor(tiny(1), resize=False, workers=0) as p:
        with pytest.raises(ImageSizeError, match=rf"big.png.*20x30.*expects {H}x{W}"):
            p.predict([path])
        with pytest.raises(ValueError, match=f"expects {H}x{W}"):
            p.predict(big)
    with Predictor(tiny(1), resize=False, on_error="skip", workers=0) as p:
        assert p.predict([path]) == [] and "20x30" in p.skipped[0].reason


def test_bad_arrays_give_clear_errors():
    with Predictor(tiny(1), workers=0) as p:
        with pytest.raises(ValueError, match="1 channels but the model takes 3"):
            p.predict(torch.zeros(2, 1, H, W, dtype=torch.uint8))
        with pytest.raises(ValueError, match="permute"):
            p.predict(torch.zeros(2, H, W, 3, dtype=torch.uint8))
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            p.predict(torch.full((2, 3, H, W), 255.0))
        with pytest.raises(TypeError, match="uint8"):
            p.predict(torch.zeros(2, 3, H, W, dtype=torch.int64))
        with pytest.raises(ValueError, match="batch axis"):
            p.predict(torch.zeros(3, H, W, dtype=torch.uint8))
        with pytest.raises(FileNotFoundError, match="no such file"):
            p.predict("/nonexistent/dir")
        with pytest.raises(TypeError, match="cannot predict on"):
            p.predict(42)
        # (2, 3, 5, 3) has 3 channels on axis 1 and on axis 3, and neither reading is 12x16
        with pytest.raises(ValueError, match="cannot tell"):
            p.predict(np.zeros((2, 3, 5, 3), np.uint8))


# ----------------------------------------------------------------------- options, stats
def test_batch_size_is_a_multiple_of_fold_and_stats_add_up():
    with Predictor(tiny(3), batch_size=10, workers=0) as p:
        assert p.batch_size == 9
        p.predict(images(10))
        s = p.stats
        assert (s.images, s.folded_inputs, s.padded_images, s.fold) == (10, 4, 2, 3)
        assert s.padding_waste == pytest.approx(2 / 12) and s.backend == "eager" and s.precision == "fp32"
        assert s.seconds_model > 0 and s.seconds_total >= s.seconds_model and s.images_per_s > 0
        assert s.model_images_per_s >= s.images_per_s and s.to_dict()["padded_images"] == 2
    assert Predictor(tiny(3), batch_size=1).batch_size == 3


def test_a_ready_backend_object_is_used_and_not_closed():
    calls = []

    class StandIn:  # the minimal backend interface: run folded inputs -> folded logits
        name, precision, fold, input_shape = "stand-in", "fp32", 2, (3, H, W)

        def run(self, x):
            calls.append(tuple(x.shape))
            with torch.no_grad():
                return tiny(2)(torch.as_tensor(x)).numpy()

        def close(self):
            raise AssertionError("the caller owns this backend")

    with Predictor(tiny(2), backend=StandIn(), batch_size=4, workers=0) as p:
        close(p.predict_arrays(images(5))[1], reference(tiny(2), images(5)))
    assert calls == [(2, 6, H, W), (1, 6, H, W)] and p.stats.backend == "stand-in"


def test_engine_runs_one_batch_ahead_in_its_own_thread_and_fails_in_place():
    """With workers > 0 the engine computes batch k+1 in its own thread while the caller holds
    batch k; an engine failure is raised at its batch's place; stopping early or failing leaves
    nothing running in the engine thread, and close() ends the thread."""
    state = {"active": 0, "calls": 0, "threads": set()}

    class Engine:
        name, precision, fold, input_shape = "stand-in", "fp32", 2, (3, H, W)

        def __init__(self, fail_at=None):
            self.fail_at = fail_at

        def run(self, x):
            state["active"] += 1
            state["calls"] += 1
            state["threads"].add(threading.current_thread().name)
            try:
                time.sleep(0.02)
                if state["calls"] == self.fail_at:
                    raise RuntimeError("the engine failed on its third batch")
                with torch.no_grad():
                    return tiny(2)(torch.as_tensor(x)).numpy()
            finally:
                state["active"] -= 1

        def close(self):
            pass

    x = images(40, seed=5)
    with Predictor(tiny(2), backend=Engine(), batch_size=4, workers=2) as p:
        it = p.predict_iter(x)
        held = [next(it) for _ in range(4)]  # all of batch 0, still with the caller
        time.sleep(0.2)
        assert state["calls"] == 2  # batch 1 ran meanwhile, and no further: one batch ahead
        it.close()
        assert state["active"] == 0
        close(probs_of(held), reference(tiny(2), x[:4]))
        close(probs_of(p.predict(x)), reference(tiny(2), x))
    assert state["threads"] and all(n.startswith("foldcnn-engine") for n in state["threads"])
    state["calls"] = 0
    got = []
    with Predictor(tiny(2), backend=Engine(fail_at=3), batch_size=4, workers=2) as p:
        with pytest.raises(RuntimeError, match="third batch"):
            for q in p.predict_iter(x):
                got.append(q.index)
        assert state["active"] == 0
    assert got == list(range(8))  # batches 0 and 1 delivered, then the failure in place
    assert not [t for t in threading.enumerate() if t.name.startswith("foldcnn-")]


def test_streaming_memory_is_bounded():
    made = []

    def chunks():
        for i in range(10_000):
            made.append(i)
            yield images(4, seed=i)

    with Predictor(tiny(2), batch_size=8, workers=2) as p:
        it = p.predict_iter(chunks())
        first = next(it)
        time.sleep(0.2)  # give the feeder time to run ahead as far as it may
        assert first.index == 0 and len(made) < 30
        it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("foldcnn-")]


def test_ordered_map_keeps_order_and_raises_in_place():
    def job(i):
        def run():
            time.sleep(0.01 * ((i * 7) % 3))
            if i == 5:
                raise RuntimeError("job 5")
            return i
        return run

    got = []
    with pytest.raises(RuntimeError, match="job 5"):
        for v in ordered_map((job(i) for i in range(9)), workers=3):
            got.append(v)
    assert got == [0, 1, 2, 3, 4]
    assert list(ordered_map((job(i) for i in range(5)), workers=0)) == [0, 1, 2, 3, 4]


def test_int8_needs_calibration_and_uses_the_checkpoints(tmp_path):
    from foldcnn.backends import available_backends

    if ("ort", "int8") not in available_backends():
        pytest.skip("ONNX Runtime int8 is not available here")
    with pytest.raises(ValueError, match="calibration"):
        Predictor(tiny(2), backend="ort", precision="int8")
    path = save_checkpoint(tmp_path / "ck", tiny(2), [f"c{i}" for i in range(K)], calibration_images=images(32))
    with Predictor.from_checkpoint(path, backend="ort", precision="int8", workers=0) as p:
        x = images(20, seed=1)
        cls, _ = p.predict_arrays(x)
        assert p.stats.precision == "int8" and cls.shape == (20,)
        assert (cls == reference(tiny(2), x).argmax(1)).mean() >= 0.8


@pytest.mark.slow  # select_backend builds every candidate, torch.compile included (~20 s here)
def test_auto_backend_records_its_choice():
    with Predictor(tiny(2), backend="auto", batch_size=8, select_seconds=0.05, workers=0) as p:
        sel = p.stats.backend_selection
        assert sel and sel["picked"].split("/")[0] == p.stats.backend and sel["images_per_s"]
        close(p.predict_arrays(images(5))[1], reference(tiny(2), images(5)))


def test_progress_bar_goes_to_stderr_and_counts_skipped(tmp_path, capsys):
    x = images(3).permute(0, 2, 3, 1).numpy()
    paths = [save_png(tmp_path / f"{i}.png", x[i]) for i in range(3)]
    paths[1].write_bytes(b"broken")
    with Predictor(tiny(2), on_error="skip", workers=1) as p:
        assert len(p.predict(tmp_path, progress=True)) == 2
    out, err = capsys.readouterr()
    assert out == "" and "3/3" in err


def test_broken_video_and_ignored_files_are_reported(tmp_path):
    from foldcnn.data.readers import VideoReadError

    pytest.importorskip("av")
    x = images(2).permute(0, 2, 3, 1).numpy()
    good = [save_png(tmp_path / "d" / f"{i}.png", x[i]) for i in range(2)]
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with Predictor(tiny(2), workers=1) as p, pytest.raises(VideoReadError, match="broken.mp4"):
        p.predict([good[0], broken])
    with Predictor(tiny(2), on_error="skip", workers=1) as p:
        preds = p.predict([good[0], broken, good[1]])
        assert [q.index for q in preds] == [0, 2] and [s.index for s in p.skipped] == [1]
        assert len(p.predict(tmp_path / "d")) == 2
        assert p.stats.ignored_files == [str(tmp_path / "d" / "notes.txt")]


@pytest.mark.gpu
def test_cuda_device_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    x = images(50, seed=7)
    with Predictor(tiny(4), workers=0) as cpu, Predictor(tiny(4), device="cuda", workers=2) as gpu:
        c_cls, c_probs = cpu.predict_arrays(x)
        g_cls, g_probs = gpu.predict_arrays(x.cuda())
        np.testing.assert_allclose(g_probs, c_probs, atol=1e-3)
        assert (g_cls == c_cls).mean() >= 0.95  # near-ties may flip under TF32 convolutions
        assert probs_of(gpu.predict(x)).shape == (50, K)


# ------------------------------------------------------------------------------ writers
def test_writers_csv_and_jsonl(tmp_path):
    preds = [Prediction(0, "a.png", None, 1, "one", 0.5, np.zeros(2)), Prediction(1, "v.mp4", 7, 0, "zero", 0.25,
                                                                                 np.zeros(2))]
    assert write_predictions(preds, tmp_path / "p.csv") == 2
    assert (tmp_path / "p.csv").read_text().splitlines() == [
        "index,source,frame,class_name,class_index,confidence", "0,a.png,,one,1,0.5", "1,v.mp4,7,zero,0,0.25"]
    write_predictions(iter(preds), tmp_path / "p.jsonl")
    import json

    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert rows[1] == {"index": 1, "source": "v.mp4", "frame": 7, "class_name": "zero", "class_index": 0,
                       "confidence": 0.25}
    with pytest.raises(ValueError, match="csv or \\*.jsonl"):
        PredictionWriter(tmp_path / "p.txt")
    with pytest.raises(RuntimeError), PredictionWriter(tmp_path / "q.csv") as w:
        w.write(preds[0])
        raise RuntimeError("stream failed")
    assert not (tmp_path / "q.csv").exists() and (tmp_path / "q.csv.partial").exists()


def test_result_row_is_the_one_schema_and_rounding():
    from foldcnn.infer.results import RESULT_COLUMNS, result_row, round_confidence

    row = result_row(np.int64(3), None, None, "c", np.int64(2), np.float32(0.123456789))
    assert tuple(row) == RESULT_COLUMNS and row["frame"] is None and row["source"] is None
    assert type(row["index"]) is int and type(row["class_index"]) is int and row["confidence"] == 0.123457
    assert round_confidence(np.float32(1 / 3)) == 0.333333
    p = Prediction(5, "v.mp4", 9, 1, "one", 0.98765432, np.zeros(2))
    assert p.to_dict() == result_row(5, "v.mp4", 9, "one", 1, 0.98765432)


# ----------------------------------------------------------------------- isolation rule
def test_a_videos_frames_are_folded_only_with_frames_of_that_video(tmp_path):
    pytest.importorskip("av")
    from foldcnn.data.video import generate_video

    video = generate_video(tmp_path / "v", 21, seed=2, size=(32, 32), progress=False).video_path
    a = [save_png(tmp_path / f"a{i}.png", images(1, seed=10 + i)[0].permute(1, 2, 0).numpy()) for i in range(3)]
    b = [save_png(tmp_path / f"b{i}.png", images(1, seed=20 + i)[0].permute(1, 2, 0).numpy()) for i in range(2)]
    with Predictor(tiny(4), batch_size=8, workers=1) as p:
        mixed = p.predict([*a, video, *b])
        stats = p.stats
        # each stream alone: the images before the video, the video, the images after it
        alone = p.predict(a) + p.predict(video) + p.predict(b)
    assert [q.index for q in mixed] == list(range(3 + 21 + 2))
    assert [(q.source, q.frame) for q in mixed] == [(q.source, q.frame) for q in alone]
    assert [q.frame for q in mixed[3:24]] == list(range(21))
    np.testing.assert_array_equal(probs_of(mixed), probs_of(alone))
    # 3 images: 1 padded slot; 21 frames: 3; 2 images after the video: 2 (not folded with the first 3)
    assert stats.padded_images == 1 + 3 + 2 and stats.folded_inputs == 1 + 6 + 1
