"""Synthetic NoScope-style video written as a real .mp4, with per-frame labels.

NoScope (docs/design.md, "Data tasks and classes") trained its specialized CNNs on fixed-camera traffic video with a
per-frame label "an object of class X is visible". The real videos are not reachable here, so
``generate_video`` renders an equivalent street scene (:mod:`foldcnn.data.video_scene`) and
writes ``video.mp4`` (H.264 through PyAV, else MPEG-4 part 2; yuv420p), ``labels.csv``
(``frame,label``) and ``manifest.json``. Read it back with
:func:`foldcnn.data.readers.load_video`, which resizes frames to 50x50 as NoScope did.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foldcnn.data.video_scene import MIN_FRAMES, OBJECTS, POSITIVE_RANGE, Scene, check_scene_args, make_scene
from foldcnn.errors import MissingExtraError, OutputExistsError, UsageError
from foldcnn.progress import progress_bar

__all__ = ["OBJECTS", "POSITIVE_RANGE", "MIN_FRAMES", "make_scene", "generate_video", "VideoResult"]

VIDEO_NAME, LABELS_NAME, MANIFEST_NAME = "video.mp4", "labels.csv", "manifest.json"
FORMAT_VERSION = "foldcnn-video/1"


@dataclass(frozen=True)
class VideoResult:
    video_path: Path
    labels_path: Path
    manifest_path: Path
    labels: np.ndarray  # int64 (frames,), 1 = object present
    manifest: dict


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pick_codec(codec: str | None) -> str:
    import av

    wanted = [codec] if codec else ["libx264", "mpeg4"]
    for name in wanted:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises several types for "no such encoder"
            continue
    raise UsageError(f"no usable video encoder among {wanted} in this PyAV/FFmpeg build")


def _import_av():
    try:
        import av
    except ImportError:
        raise MissingExtraError(
            "writing and reading video needs PyAV: pip install 'foldcnn[video]'") from None
    return av


# ITU-R BT.601, limited range: what decoders assume for untagged standard-definition video.
# Converted here rather than by swscale so the pixels encoded do not depend on its version.
_BT601 = np.array([[0.256788, 0.504129, 0.097906],
                   [-0.148223, -0.290993, 0.439216],
                   [0.439216, -0.367788, -0.071427]], np.float32)


def _rgb_to_yuv420p(rgb: np.ndarray) -> list[np.ndarray]:
    """uint8 (H, W, 3) RGB -> the planes Y (H, W), U and V (H/2, W/2) of yuv420p, uint8."""
    h, w, _ = rgb.shape
    x = rgb.astype(np.float32)
    ky = _BT601[0]
    y = x[..., 0] * ky[0] + x[..., 1] * ky[1] + x[..., 2] * ky[2] + 16
    # Chroma is linear in RGB, so average each 2x2 block first and convert a quarter of the pixels.
    quad = (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) * 0.25
    uv = quad @ _BT601[1:].T + 128
    return [np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (y, uv[..., 0], uv[..., 1])]


def _yuv_frame(av, planes: list[np.ndarray]):
    """A yuv420p VideoFrame whose every byte, row padding included, is set (SIMD code may read it)."""
    h, w = planes[0].shape
    frame = av.VideoFrame(w, h, "yuv420p")
    for plane, src in zip(frame.planes, planes):
        buf = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        ph, pw = src.shape
        buf[:ph, :pw] = src
        buf[:ph, pw:] = src[:, -1:]
        buf[ph:] = 0
    return frame


def _encode(scene: Scene, path: Path, codec: str, crf: int, progress: bool) -> dict:
    av = _import_av()
    w, h = scene.size
    # bitexact flags and one thread: the same seed and library versions give the same bytes.
    options = {"flags": "+bitexact"}
    if codec == "libx264":
        # mbtree off: with it on, libx264 (core 165) gave different bytes for the same input in
        # about 1 run of 10 at small frame sizes; with it off 90 of 90 runs were identical.
        options.update({"preset": "veryfast", "crf": str(crf), "x264-params": "mbtree=0"})
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=scene.fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        if codec != "libx264":
            stream.codec_context.bit_rate = w * h * scene.fps  # ~1 bit per pixel: near lossless
        stream.codec_context.options = options
        bar = progress_bar(total=scene.frames, unit="frame", desc="video", disable=not progress, leave=False)
        for t in range(scene.frames):
            frame = _yuv_frame(av, _rgb_to_yuv420p(scene.frame(t)))
            frame.pts = t
            container.mux(stream.encode(frame))
            bar.update()
        container.mux(stream.encode(None))
        bar.close()
    return {"name": codec, "pix_fmt": "yuv420p", "colour": "BT.601 limited range", "options": options,
            "threads": 1, "container": "mp4"}


def generate_video(out_dir: str | Path, frames: int, seed: int, size: tuple[int, int] = (320, 240),
                   obj: str = "car", fps: int = 30, *, distractors: bool = True, codec: str | None = None,
                   crf: int = 18, overwrite: bool = False, progress: bool = True,
                   command: str | None = None) -> VideoResult:
    """Render a synthetic NoScope-style video into ``out_dir``.

    Writes ``video.mp4`` (H.264 via libx264 when available, else MPEG-4 part 2; yuv420p),
    ``labels.csv`` (header ``frame,label``; 1 = an ``obj`` is visible) and ``manifest.json``
    (seed, frames, size, object, positives fraction, codec, sha256 of both files, versions).
    ``size`` is (width, height). Labels depend only on the arguments, not on the codec.
    """
    size = check_scene_args(frames, size, obj, fps, seed)
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise UsageError(f"crf must be an int in [0, 51] (lower = better quality), got {crf!r}")
    _import_av()
    out = Path(out_dir)
    paths = [out / n for n in (VIDEO_NAME, LABELS_NAME, MANIFEST_NAME)]
    if not overwrite and any(p.exists() for p in paths):
        raise OutputExistsError(f"{out} already holds a generated video; pass overwrite=True (--overwrite)")
    codec = _pick_codec(codec)
    out.mkdir(parents=True, exist_ok=True)
    scene = make_scene(frames, seed, size, obj, fps, distractors=distractors)

    tmp = out / (VIDEO_NAME + ".part")
    try:
        codec_info = _encode(scene, tmp, codec, crf, progress)
        tmp.replace(paths[0])
    finally:
        tmp.unlink(missing_ok=True)
    paths[1].write_text("frame,label\n" + "".join(f"{t},{v}\n" for t, v in enumerate(scene.labels.tolist())))
    manifest = _manifest(scene, codec_info, paths, command)
    paths[2].write_text(json.dumps(manifest, indent=2) + "\n")
    return VideoResult(paths[0], paths[1], paths[2], scene.labels.copy(), manifest)


def _manifest(scene: Scene, codec_info: dict, paths: list[Path], command: str | None) -> dict:
    import av

    from foldcnn import __version__

    return {
        "format": FORMAT_VERSION,
        "generator": "foldcnn.data.video.generate_video",
        "seed": scene.seed,
        "frames": scene.frames,
        "size": list(scene.size),
        "size_order": "width x height",
        "object": scene.obj,
        "fps": scene.fps,
        "distractors": scene.distractors,
        "positives": int(scene.labels.sum()),
        "positives_fraction": round(scene.positives_fraction, 6),
        "label": f"1 when any pixel of a {scene.obj} is inside the frame",
        "codec": codec_info,
        "files": {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in paths[:2]},
        "objects": [o.to_dict() for o in scene.objects],
        "lighting": {"amplitude": round(scene.light_amplitude, 4),
                     "period_frames": round(scene.light_period_frames, 1),
                     "noise_sigma": round(scene.noise_sigma, 3)},
        "versions": {"foldcnn": __version__, "numpy": np.__version__, "av": av.__version__,
                     "libavcodec": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
                     "python": platform.python_version()},
        "command": command,
    }
