"""foldcnn.data.frames: the batched, sampled 4:2:0 -> RGB conversion gives swscale's own pixels
(the full-frame conversion, then a nearest-neighbour resize) for every geometry, in order, across
batch boundaries, and falls back to the full conversion where its check fails."""

import numpy as np
import pytest

av = pytest.importorskip("av")

from foldcnn.data import frames as F  # noqa: E402
from foldcnn.data.readers import iter_video_batches, iter_video_frames, resize_rgb  # noqa: E402


def _noise(w, h, fmt="yuv420p", seed=0, colorspace=None, color_range=None):
    frame = av.VideoFrame(w, h, fmt)
    rng = np.random.default_rng(seed)
    for plane in frame.planes:
        view = np.frombuffer(memoryview(plane), np.uint8)
        view[:] = rng.integers(0, 256, view.shape, dtype=np.uint8)
    if colorspace is not None:
        frame.colorspace = colorspace
    if color_range is not None:
        frame.color_range = color_range
    return frame


def _reference(frame, size, mode="nearest"):
    rgb = frame.to_ndarray(format="rgb24")  # a converter of its own: independent of FrameConverter's
    return resize_rgb(rgb, size, mode).transpose(2, 0, 1)


@pytest.mark.parametrize("w,h,size,fmt,tags", [
    (320, 240, (50, 50), "yuv420p", {}),
    (64, 48, (7, 13), "yuv420p", {"colorspace": 1}),  # BT.709
    (64, 48, (100, 90), "yuv420p", {"color_range": 2}),  # upsampling, full range
    (64, 48, (24, 32), "yuvj420p", {}),
    (426, 240, (50, 50), "yuv420p", {"colorspace": 1, "color_range": 2}),
    (321, 241, (50, 50), "yuv420p", {}),  # odd sizes
    (64, 48, (24, 32), "nv12", {}),  # not planar 4:2:0: the reference path
])
def test_converter_gives_the_full_conversions_pixels(w, h, size, fmt, tags):
    frames = [_noise(w, h, fmt, seed=i, **tags) for i in range(7)]
    conv = F.FrameConverter(size, "nearest", batch=3)
    got = []
    for k, f in enumerate(frames):
        conv.add(f)
        if k in (1, 5):  # takes at uneven points, batches of 3 in between
            got.append(conv.take())
    got.append(conv.take())
    out = np.concatenate(got)
    assert out.shape == (7, 3, *size) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.stack([_reference(f, size) for f in frames]))


def test_planar_420_takes_the_sampled_path():
    """The geometry check passes where it should: else the speed-up would be silently lost."""
    conv = F.FrameConverter((50, 50), "nearest")
    conv.add(_noise(320, 240))
    assert [type(v).__name__ for v in conv._fast.values()] == ["_Sampled"]
    conv = F.FrameConverter((50, 50), "bilinear")  # only nearest neighbour is sampled
    conv.add(_noise(320, 240))
    assert list(conv._fast.values()) == [None]


def test_a_failed_check_falls_back_to_the_full_conversion(monkeypatch):
    monkeypatch.setattr(F, "_geometry_ok", lambda key, size: False)
    frames = [_noise(64, 48, seed=i) for i in range(4)]
    conv = F.FrameConverter((24, 32))
    for f in frames:
        conv.add(f)
    assert list(conv._fast.values()) == [None]
    np.testing.assert_array_equal(conv.take(), np.stack([_reference(f, (24, 32)) for f in frames]))


def test_sizes_that_change_mid_stream_keep_their_order():
    frames = [_noise(64, 48, seed=0), _noise(320, 240, seed=1), _noise(64, 48, seed=2), _noise(64, 48, "nv12", seed=3)]
    conv = F.FrameConverter((20, 30), batch=2)
    for f in frames:
        conv.add(f)
    np.testing.assert_array_equal(conv.take(), np.stack([_reference(f, (20, 30)) for f in frames]))


def test_video_batches_are_the_frames(tmp_path):
    from foldcnn.data.video import generate_video

    path = generate_video(tmp_path, 45, seed=3, size=(64, 48), progress=False).video_path
    with av.open(str(path)) as c:
        want = [_reference(f, (20, 30)) for f in c.decode(video=0)]
    got_numbers, got, decoded = [], [], []
    for numbers, images, n in iter_video_batches(path, (20, 30), stride=4, batch=5):
        assert len(numbers) <= 5 and images.shape == (len(numbers), 3, 20, 30)
        got_numbers += numbers
        got.append(images)
        decoded.append(n)
    assert got_numbers == list(range(0, 45, 4)) and decoded[-1] == 45 and decoded == sorted(decoded)
    np.testing.assert_array_equal(np.concatenate(got), np.stack(want[::4]))
    per_frame = list(iter_video_frames(path, (20, 30), stride=4))
    assert [n for n, _ in per_frame] == got_numbers
    np.testing.assert_array_equal(np.stack([t.numpy() for _, t in per_frame]), np.concatenate(got))
