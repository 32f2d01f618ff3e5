"""One video cut at key frames into segments that decode independently, in parallel processes.

FFmpeg's own threads barely speed up the decoding of one small H.264 stream
(docs/notebook/2026-12-07-end-to-end.md, with the numbers), so a single video
kept the decoder on one core's pace whatever the machine. Two processes each decoding their
own run of key-frame groups, single-threaded, decoded the same video faster.

:func:`plan_segments` reads the packets only (no decoding: about 8 us a frame): their
timestamps number the frames in presentation order, and the key frames cut the video into
segments of at least ``min_frames`` frames. :func:`decode_segment` (run in a decoding process)
seeks to its segment's key frame, decodes up to the next segment's, and checks that every frame
it decodes has the timestamp the plan expects there, so frame numbers are the ones sequential
decoding gives; a frame that does not fit (a stream whose timestamps do not order its frames)
is reported, and the caller decodes that video sequentially instead. Errors are returned as
data (a process boundary loses exception details): the frames decoded before them come back
with them, as sequential decoding yields them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foldcnn.data.frames import FrameConverter

__all__ = ["SegmentAnswer", "VideoPlan", "VideoSegment", "decode_segment", "plan_segments"]

MIN_SEGMENT_FRAMES = 256


@dataclass(frozen=True)
class VideoSegment:
    """Frames ``first .. first + len(pts) - 1`` of a video: timestamps ``pts`` (sorted), from
    the key frame at ``pts[0]`` up to (not including) ``end_pts`` (None: the end)."""

    first: int
    pts: tuple[int, ...]
    end_pts: int | None

    @property
    def frames(self) -> int:
        return len(self.pts)


@dataclass(frozen=True)
class VideoPlan:
    segments: tuple[VideoSegment, ...]
    frames: int  # packets with a picture in the file
    declared: int  # frames the container declares (0: it does not say)


@dataclass
class SegmentAnswer:
    """What a decoding process sends back for one segment."""

    numbers: list[int]  # frame numbers of ``images`` (every stride-th)
    images: np.ndarray  # uint8 (k, 3, H, W)
    decoded: int  # frames of the segment decoded (stride-skipped ones included)
    error: str | None = None  # FFmpeg's error, after ``decoded`` frames
    mismatch: str | None = None  # a frame the plan did not expect: decode this video sequentially
    seconds: float = 0.0


def plan_segments(path: str | Path, min_frames: int | None = None) -> VideoPlan | None:
    """Key-frame segments of a video's first video stream, or None where it cannot be cut
    safely (a packet without a timestamp, two with the same one, fewer than two segments, a
    file PyAV cannot demux: sequential decoding then reports whatever is wrong).
    ``min_frames`` defaults to MIN_SEGMENT_FRAMES."""
    import av

    min_frames = MIN_SEGMENT_FRAMES if min_frames is None else min_frames
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            pts: list[int] = []
            keys: list[int] = []
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's flush packet
                    continue
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
            declared = int(stream.frames or 0)
    except (av.FFmpegError, OSError):
        return None
    pts.sort()
    if len(pts) < 2 * min_frames or not keys or len(set(pts)) != len(pts):
        return None
    # cut at key frames, every segment at least min_frames long (the last one may be longer)
    cuts = [pts[0]]
    sorted_keys = sorted(set(keys))
    position = {p: i for i, p in enumerate(pts)}
    for k in sorted_keys:
        if position[k] - position[cuts[-1]] >= min_frames and len(pts) - position[k] >= min_frames:
            cuts.append(k)
    if len(cuts) < 2 or sorted_keys[0] != pts[0]:  # the first frame must be a key frame to start there
        return None
    segments = []
    for i, lo in enumerate(cuts):
        hi = cuts[i + 1] if i + 1 < len(cuts) else None
        a, b = position[lo], (position[hi] if hi is not None else len(pts))
        segments.append(VideoSegment(a, tuple(pts[a:b]), hi))
    return VideoPlan(tuple(segments), len(pts), declared)


def decode_segment(path: str, segment: VideoSegment, input_size: tuple[int, int] | None, stride: int,
                   resize: str) -> SegmentAnswer:
    """Decode one segment (single-threaded: one process per core decodes) into every
    ``stride``-th frame (by frame number) at ``input_size``. What a decoding process runs."""
    import av

    t0 = time.perf_counter()
    convert = FrameConverter(input_size, resize)
    numbers: list[int] = []
    batches: list[np.ndarray] = []
    k = 0
    error = mismatch = None
    lo = segment.pts[0]
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "NONE"
            container.seek(lo, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is None:
                    mismatch = f"a frame without a timestamp after frame {segment.first + k}"
                    break
                if frame.pts < lo:
                    continue  # the key frame group before (a seek lands at or before the key frame)
                if segment.end_pts is not None and frame.pts >= segment.end_pts:
                    break
                if k >= segment.frames or frame.pts != segment.pts[k]:
                    mismatch = f"frame {segment.first + k} has timestamp {frame.pts}, expected " + \
                               (str(segment.pts[k]) if k < segment.frames else "none")
                    break
                number = segment.first + k
                if number % stride == 0:
                    convert.add(frame)
                    numbers.append(number)
                    if convert.pending == 64:
                        batches.append(convert.take())
                k += 1
    except av.FFmpegError as e:
        error = str(e)
    if k < segment.frames and error is None and mismatch is None:
        mismatch = f"decoding ended after {k} of the segment's {segment.frames} frames"
    if convert.pending or not batches:
        batches.append(convert.take())
    images = np.concatenate(batches) if len(batches) > 1 else batches[0]
    return SegmentAnswer(numbers, images, k, error, mismatch, time.perf_counter() - t0)
