"""foldcnn.data.segments and the Predictor's segmented video decoding: the key-frame segments of a
video, decoded in processes, give the frames, numbers and rows of sequential decoding (closed and
open GOPs, strides); a segment that does not decode as planned hands the rest of the video to
sequential decoding; a truncated video reports as it did; a dying decoder names its frames."""

import os

import numpy as np
import pytest

av = pytest.importorskip("av")

from foldcnn.data import segments  # noqa: E402
from foldcnn.data.readers import iter_video_batches  # noqa: E402
from foldcnn.infer import Predictor  # noqa: E402
from foldcnn.infer.pipeline import DecoderDiedError  # noqa: E402
from tiny_data import gop_video, one_thread, tiny_model  # noqa: E402,F401 (one_thread: autouse)

SIZE = (12, 16)  # tiny_model's input


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("gop")
    return {"closed": gop_video(root / "closed.mp4"), "open": gop_video(root / "open.mp4", open_gop=True)}


def _sequential(path, stride):
    numbers, images = [], []
    for n, im, _ in iter_video_batches(path, SIZE, stride=stride):
        numbers += n
        images.append(im)
    return numbers, np.concatenate(images)


@pytest.mark.parametrize("gop", ["closed", "open"])
@pytest.mark.parametrize("stride", [1, 3])
def test_segments_decode_to_the_sequential_frames(videos, gop, stride):
    plan = segments.plan_segments(videos[gop], min_frames=16)
    assert [s.first for s in plan.segments] == [0, 20, 40, 60] and plan.frames == 90
    assert [s.frames for s in plan.segments] == [20, 20, 20, 30]
    numbers, images = [], []
    for seg in plan.segments:
        answer = segments.decode_segment(str(videos[gop]), seg, SIZE, stride, "nearest")
        assert answer.error is None and answer.mismatch is None and answer.decoded == seg.frames
        numbers += answer.numbers
        images.append(answer.images)
    want_numbers, want_images = _sequential(videos[gop], stride)
    assert numbers == want_numbers == list(range(0, 90, stride))
    np.testing.assert_array_equal(np.concatenate(images), want_images)


def test_videos_that_cannot_be_cut_have_no_plan(videos, tmp_path):
    assert segments.plan_segments(videos["closed"], min_frames=46) is None  # two segments need 2 x 46 frames
    assert segments.plan_segments(gop_video(tmp_path / "one.mp4", frames=60, gop=250), min_frames=16) is None
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 64)
    assert segments.plan_segments(tmp_path / "junk.mp4") is None


def _rows(path, workers, stride=2, **kw):
    with Predictor(tiny_model(4, size=SIZE), workers=workers, decoders="processes", batch_size=8, **kw) as p:
        rows = [(q.index, q.source, q.frame, q.class_index, q.probabilities.tobytes()) for q in p.predict(path, stride=stride)]
        return rows, [(s.index, s.source, s.reason) for s in p.skipped], p.stats


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_predictor_rows_match_sequential_decoding(videos, monkeypatch, workers):
    monkeypatch.setattr(segments, "MIN_SEGMENT_FRAMES", 16)
    want, _, _ = _rows(videos["open"], workers=0)
    got, _, stats = _rows(videos["open"], workers=workers)
    assert got == want and len(got) == 45
    assert stats.images_decoded_in_processes == 45  # every frame went through a segment


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_segmented_videos_among_broken_ones_one_row_or_one_skip_each(videos, tmp_path, monkeypatch, workers):
    monkeypatch.setattr(segments, "MIN_SEGMENT_FRAMES", 16)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    inputs = [videos["open"], broken, videos["closed"], broken]
    want = _rows(inputs, workers=0, on_error="skip")
    got = _rows(inputs, workers=workers, on_error="skip")
    assert got[:2] == want[:2]
    assert [s[0] for s in got[1]] == [45, 91]  # each broken video: one skipped entry at its position
    assert got[2].images_decoded_in_processes == 90


def _mismatch_from_third(path, segment, *args):
    answer = _real_decode(path, segment, *args)
    if segment.first >= 40:
        answer.mismatch = "made up by the test"
    return answer


_real_decode = segments.decode_segment


def test_a_segment_off_plan_hands_the_rest_to_sequential_decoding(videos, monkeypatch):
    want, _, _ = _rows(videos["closed"], workers=0, stride=1)
    monkeypatch.setattr(segments, "MIN_SEGMENT_FRAMES", 16)
    monkeypatch.setattr(segments, "decode_segment", _mismatch_from_third)
    got, _, stats = _rows(videos["closed"], workers=2, stride=1)
    assert got == want and [r[2] for r in got] == list(range(90))
    assert stats.images_decoded_in_processes == 40  # the first two segments; the rest sequentially


def test_a_truncated_video_reports_as_sequential_decoding_does(tmp_path, monkeypatch):
    whole = gop_video(tmp_path / "whole.mp4", faststart=True)
    with av.open(str(whole)) as c:
        starts = sorted(p.pos for p in c.demux(video=0) if p.size)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:starts[70]])  # a half-copied download: declares 90 frames
    monkeypatch.setattr(segments, "MIN_SEGMENT_FRAMES", 16)
    results = []
    for workers in (0, 2):
        with Predictor(tiny_model(4, size=SIZE), workers=workers, decoders="processes", on_error="skip") as p:
            rows = [(q.index, q.frame, q.probabilities.tobytes()) for q in p.predict(cut, stride=2)]
            results.append((rows, [(i.index, i.reason) for i in p.stats.incomplete_inputs], p.stats))
    (want, want_cut, _), (got, got_cut, stats) = results
    assert got == want and len(got) == 35 and stats.images_decoded_in_processes == 35
    assert got_cut == want_cut and "truncated" in got_cut[0][1]


def _die_on_second(path, segment, *args):
    if segment.first == 20:
        os._exit(3)  # what a segfaulting decoder looks like from here
    return _real_decode(path, segment, *args)


def test_a_dying_segment_decoder_fails_the_run_naming_the_frames(videos, monkeypatch):
    monkeypatch.setattr(segments, "MIN_SEGMENT_FRAMES", 16)
    monkeypatch.setattr(segments, "decode_segment", _die_on_second)
    with Predictor(tiny_model(4, size=SIZE), workers=2, decoders="processes") as p:
        with pytest.raises(DecoderDiedError, match=f"frames 20..39 of the video {videos['closed']}"):
            p.predict(videos["closed"])


def test_progress_counts_a_videos_declared_frames(videos, tmp_path):
    from foldcnn.infer.sources import count_inputs

    v = videos["closed"]
    assert count_inputs(v) == 90 and count_inputs(v, stride=4) == 23  # frames 0, 4, .., 88
    assert count_inputs(v, keyframes=True) is None  # how many key frames: unknown before decoding
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 64)
    assert count_inputs([v, v]) == 180 and count_inputs([v, tmp_path / "junk.mp4"]) is None
    folder = tmp_path / "both"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(v.read_bytes())
    assert count_inputs(folder, stride=2) == 45 and count_inputs([folder, v]) == 180
