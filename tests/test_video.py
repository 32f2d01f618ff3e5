import hashlib
import json
import sys

import numpy as np
import pytest

from foldcnn.cli import main
from foldcnn.data.video import OBJECTS, POSITIVE_RANGE, generate_video, make_scene

pytest.importorskip("av")

SIZE = (96, 72)  # (W, H): small for speed


@pytest.fixture(scope="module")
def clean_video(tmp_path_factory):
    """A video without distractors, so every negative frame shows only the background."""
    out = tmp_path_factory.mktemp("clean")
    return generate_video(out, 150, seed=3, size=SIZE, obj="car", distractors=False, progress=False)


def _decode(path):
    from foldcnn.data.readers import iter_video_frames

    return np.stack([f.permute(1, 2, 0).numpy() for _, f in iter_video_frames(path, input_size=None)])


def test_written_video_decodes_with_one_label_per_frame(clean_video):
    r = clean_video
    frames = _decode(r.video_path)
    rows = r.labels_path.read_text().splitlines()
    assert rows[0] == "frame,label"
    assert frames.shape == (150, SIZE[1], SIZE[0], 3)
    assert len(rows) - 1 == len(frames) == len(r.labels)
    assert [int(x.split(",")[1]) for x in rows[1:]] == r.labels.tolist()
    assert [int(x.split(",")[0]) for x in rows[1:]] == list(range(150))
    m = json.loads(r.manifest_path.read_text())
    assert m == r.manifest
    assert (m["seed"], m["frames"], m["size"], m["object"]) == (3, 150, list(SIZE), "car")
    assert m["positives"] == int(r.labels.sum())
    assert POSITIVE_RANGE[0] <= m["positives_fraction"] <= POSITIVE_RANGE[1]
    assert m["codec"]["name"] in ("libx264", "mpeg4") and m["codec"]["pix_fmt"] == "yuv420p"
    for name in ("video.mp4", "labels.csv"):
        digest = hashlib.sha256((r.video_path.parent / name).read_bytes()).hexdigest()
        assert m["files"][name]["sha256"] == digest


def test_object_pixels_differ_from_background(clean_video):
    r = clean_video
    frames = _decode(r.video_path).astype(np.float32)
    scene = make_scene(150, 3, SIZE, "car", distractors=False)
    # The background as decoded (chroma subsampling and compression included), lit as each frame.
    light = np.stack([scene.gain(t) for t in range(150)])[:, None, None, :]
    reference = np.median(frames[r.labels == 0] / light[r.labels == 0], axis=0)
    assert np.abs(reference - scene.background).mean() < 4
    changed = (np.abs(frames - reference * light).max(axis=3) > 40).mean(axis=(1, 2))  # per frame
    pos, neg = changed[r.labels == 1], changed[r.labels == 0]
    assert len(pos) and len(neg)
    assert neg.max() < 0.001  # sensor noise and compression only
    assert pos.mean() > 0.003 and pos.mean() > 20 * max(neg.mean(), 1e-5)  # a car is ~1% of a frame
    assert (pos > 0).mean() > 0.9  # nearly every positive frame shows changed pixels


def test_same_seed_same_files(clean_video, tmp_path):
    again = generate_video(tmp_path, 150, seed=3, size=SIZE, obj="car", distractors=False, progress=False)
    assert again.labels_path.read_bytes() == clean_video.labels_path.read_bytes()
    # Same library versions on one machine: bit-exact (swscale is bypassed for this reason).
    assert again.video_path.read_bytes() == clean_video.video_path.read_bytes()


def test_labels_depend_on_seed_only():
    a = make_scene(400, 11, SIZE, "person")
    b = make_scene(400, 11, SIZE, "person")
    c = make_scene(400, 12, SIZE, "person")
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert np.array_equal(a.frame(123), b.frame(123))


@pytest.mark.parametrize("obj", OBJECTS)
def test_positive_fraction_in_range_across_seeds_and_lengths(obj):
    for seed in range(25):
        for frames in (20, 37, 90, 300, 1000, 5000):
            s = make_scene(frames, seed, (64, 48), obj)
            assert POSITIVE_RANGE[0] <= s.positives_fraction <= POSITIVE_RANGE[1], (seed, frames)


@pytest.mark.parametrize("obj", OBJECTS)
def test_rendered_pixels_agree_with_labels(obj):
    # Scene.frame raises if a target was drawn in a frame labelled 0 or not drawn in one labelled 1.
    s = make_scene(300, 5, (64, 48), obj)
    frames = np.stack(list(s))
    assert frames.shape == (300, 48, 64, 3) and frames.dtype == np.uint8
    assert 0 < s.labels.sum() < 300


def test_bad_arguments():
    with pytest.raises(ValueError, match="object must be one of"):
        make_scene(100, 0, SIZE, "truck")
    with pytest.raises(ValueError, match="frames must be"):
        make_scene(5, 0, SIZE)
    with pytest.raises(ValueError, match="even"):
        make_scene(100, 0, (97, 72))


def test_refuses_to_overwrite(clean_video):
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_video(clean_video.video_path.parent, 150, seed=3, size=SIZE, progress=False)


def test_missing_pyav_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r"pip install 'foldcnn\[video\]'"):
        generate_video(tmp_path, 30, seed=0, size=SIZE, progress=False)


def test_cli_data_video(tmp_path, capsys):
    out = tmp_path / "v"
    args = ["data", "video", "--out", str(out), "--frames", "40", "--data-seed", "2", "--input-size", "48x64",
            "--object", "bus", "--quiet"]
    assert main(args) == 0
    assert "bus present in" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["object"] == "bus" and m["size"] == [64, 48] and m["command"].startswith("foldcnn data video")
    assert main(args) == 2  # exists: needs --overwrite
    assert "overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
