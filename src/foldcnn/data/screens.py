"""Synthetic game screens to scrape: a match's HUD readouts over a moving scene, as an H.264 video.

    write_screens("screens/lol", "lol", seconds=60, fps=30, seed=0)
    # -> video.mp4 (1280x720), layout.json (a region per HUD readout, its zoo task named where the
    #    checkpoint goes), truth.csv (frame, region, class), manifest.json

Each HUD region shows one game task's readout, rendered by the game tasks' own renderer
(:func:`foldcnn.data.game_text.render_readouts`: the same fonts, placement, backgrounds, colours
and effects as the training crops) at the task's crop size, so models trained on
``foldcnn data game`` crops read it. The values evolve as in a match: the clock ticks every
second, gold and coins rise in steps, the squad count drops, a countdown runs down; now and then
a region shows no valid readout: class ``other``, drawn as the training crops' ``other`` is (a
placeholder, a word, an empty panel, or a panel drawn over the region: the renderer's empty
panel in a look of its own). A region keeps its font for the whole match and changes its panel's look every
``LOOK_SECONDS``; the scene behind the HUD (textures from the game text's background bank,
enlarged and coloured) pans and changes every ``SCENE_SECONDS``. The output is a function of
(game, seconds, fps, size, seed) and the library versions (the encoder's bytes).

The video is H.264 4:2:0 at ``CRF`` 6: HUD crops are small and noisy (the training crops'
noise and JPEG artefacts), and at the usual crf 18 the encoder smooths them enough to change
what a region model reads, which the training crops never show; at crf 6 the decoded crops
read as the rendered ones (docs/scrape.md has the measurement).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from foldcnn.data.backgrounds import texture_bank
from foldcnn.data.fonts import font_faces
from foldcnn.data.game_tasks import OTHER, Readout, game_task
from foldcnn.data.game_text import OTHER_KINDS, TRACKING, _other_readout, render_readouts
from foldcnn.errors import OutputExistsError, UsageError

__all__ = ["GAMES", "SCREENS_VERSION", "HudRegion", "write_screens"]

SCREENS_VERSION = "foldcnn-screens/2"
CRF = 6  # H.264 quality: the decoded HUD crops read as the rendered ones (module docstring)
LOOK_SECONDS, SCENE_SECONDS = 10.0, 12.0
OTHER_PER_MINUTE = 3.0  # spells of no valid readout per region and minute
OTHER_SECONDS = (0.5, 2.0)
OTHER_STATES = ("placeholder", "empty", "occluded", "words")


@dataclass(frozen=True)
class HudRegion:
    name: str
    task: str
    at: tuple[float, float]  # top-left corner as fractions of the frame (x, y)


GAMES: dict[str, tuple[HudRegion, ...]] = {
    "lol": (HudRegion("timer", "lol-timer-minutes", (0.915, 0.02)),
            HudRegion("gold", "lol-gold-int", (0.60, 0.955)),
            HudRegion("team_gold", "lol-gold-fraction", (0.42, 0.02))),
    "apex": (HudRegion("squads", "apex-squad-count", (0.86, 0.05)),),
    "sot": (HudRegion("coins", "sot-coin-count", (0.88, 0.90)),
            HudRegion("timer", "sot-timer", (0.48, 0.03))),
}


# ------------------------------------------------------------------------ values over a match
def _steps(rng, frames: int, fps: int, start: int, every_s: tuple[float, float], delta: tuple[int, int]) -> np.ndarray:
    """A value that changes by a random step in ``delta`` after random waits in ``every_s``."""
    out = np.empty(frames, np.int64)
    value, f = start, 0
    while f < frames:
        n = max(1, int(rng.uniform(*every_s) * fps))
        out[f:f + n] = value
        f += n
        value += int(rng.integers(delta[0], delta[1] + 1))
    return out


def _readouts(task: str, rng, frames: int, fps: int) -> list[tuple[str, Readout]]:
    """(class name, readout) per frame of one region's value over the match."""
    spec = game_task(task)
    t = np.arange(frames) / fps
    if task == "lol-timer-minutes":
        clock = rng.uniform(60, 40 * 60) + t
        return [(f"{int(c // 60):02d}", spec.make(int(c // 60), [int(c % 60), 0, 0, 0])) for c in clock]
    if task == "sot-timer":
        left = rng.uniform(90, 25 * 60) - t
        left = np.maximum(left, 0)
        return [(str(int(c // 60)), spec.make(int(c // 60), [int(c % 60), 0, 0, 0])) for c in left]
    if task in ("lol-gold-int", "lol-gold-fraction"):  # tenths of a thousand gold
        gold = np.minimum(_steps(rng, frames, fps, int(rng.integers(5, 600)), (1.0, 4.0), (1, 6)), 999)
        out = []
        for g in gold.tolist():
            ip, frac = g // 10, g % 10
            if task == "lol-gold-int":
                out.append((str(ip), spec.make(ip if ip < 10 else ip + 10, [0, 0, frac, 0])))
            else:
                out.append((str(frac), spec.make(frac, [ip, 1, 0, 0])))
        return out
    if task == "apex-squad-count":
        squads = np.maximum(_steps(rng, frames, fps, 20, (1.5, 5.0), (-1, -1)), 1)
        fmt = int(rng.integers(0, 3))
        return [(str(s), spec.make(s, [0, fmt, 0, 0])) for s in squads.tolist()]
    if task == "sot-coin-count":
        coins = np.minimum(_steps(rng, frames, fps, int(rng.integers(120, 900)), (2.0, 6.0), (10, 150)), 1499)
        return [(str(c // 100), spec.make(c // 100 - 1, [c % 100, 0, 0, 0])) for c in coins.tolist()]
    raise UsageError(f"no match values for task {task}")


def _other_spells(rng, frames: int, fps: int) -> list[tuple[int, int, str]]:
    """(first frame, end frame, state) of the spells with no valid readout."""
    n = rng.poisson(OTHER_PER_MINUTE * frames / fps / 60)
    spells = []
    for _ in range(n):
        a = int(rng.integers(0, frames))
        spells.append((a, min(frames, a + int(rng.uniform(*OTHER_SECONDS) * fps)),
                       OTHER_STATES[int(rng.integers(len(OTHER_STATES)))]))
    return spells


# ---------------------------------------------------------------------------------- drawing
class _Scene:
    """The moving picture behind the HUD: bank textures, enlarged and coloured, panning."""

    def __init__(self, rng, size: tuple[int, int], fps: int) -> None:
        self.rng, (self.w, self.h), self.fps = rng, size, fps
        self.pan = 2 * max(1, int(SCENE_SECONDS * fps))
        self._key, self._big, self._v = None, None, (0, 0)

    def frame(self, f: int) -> np.ndarray:
        key = int(f / (SCENE_SECONDS * self.fps))
        if key != self._key:
            bank = texture_bank()
            tex = bank[int(self.rng.integers(len(bank)))]
            big = np.asarray(Image.fromarray(tex, mode="F").resize((self.w + self.pan, self.h + self.pan),
                                                                   Image.Resampling.BICUBIC))
            lo, hi = self.rng.random(3) * 0.5, 0.4 + self.rng.random(3) * 0.6
            self._big = (np.clip(lo + np.clip(big, 0, 1)[..., None] * (hi - lo), 0, 1) * 255).astype(np.uint8)
            self._key, self._start = key, f
            self._v = tuple(int(v) for v in self.rng.integers(0, 3, 2))
        k = f - self._start
        y, x = min(k * self._v[0], self.pan - 1) // 2, min(k * self._v[1], self.pan - 1)
        return self._big[y:y + self.h, x:x + self.w].copy()


class _RegionPainter:
    """One HUD region: a fixed font and letter spacing, a panel look that changes every LOOK_SECONDS."""

    def __init__(self, region: HudRegion, rng, fps: int, size: tuple[int, int]) -> None:
        self.spec = game_task(region.task)
        h, w = self.spec.size
        self.x, self.y = min(int(region.at[0] * size[0]), size[0] - w), min(int(region.at[1] * size[1]), size[1] - h)
        self.face = int(rng.integers(len(font_faces())))
        self.u = rng.random(5)
        self.u[4] = 0.0  # the readout wholly inside its panel where it fits, as a HUD draws it
        self.track = int(rng.choice(TRACKING))
        self.seed, self.fps = int(rng.integers(1 << 31)), fps
        self.words = [int(v) for v in rng.integers(0, 1 << 30, 4)]
        self._cache: dict = {}

    @property
    def box(self) -> list[int]:
        h, w = self.spec.size
        return [self.x, self.y, w, h]

    def crop(self, f: int, readout: Readout | None, cut: bool = False, over: bool = False) -> np.ndarray:
        """The region's crop at frame ``f`` showing ``readout``; ``over``: the panel of another
        look (its own background and colours), as a panel drawn over the region shows."""
        look = int(f / (LOOK_SECONDS * self.fps))
        key = (look, readout, cut, over)
        if key not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            rng = np.random.default_rng([self.seed, look, 1] if over else [self.seed, look])
            img = render_readouts(self.spec, [(readout, cut)], [self.face], self.u[None], [self.words],
                                  [self.track], rng)
            self._cache[key] = img[0].transpose(1, 2, 0)
        return self._cache[key]

    def other(self, f: int, state: str) -> np.ndarray:
        """The crop of an ``other`` spell: the training renderer's ``other`` of that kind; a panel
        drawn over the region is an empty panel of another look (the renderer's ``empty``)."""
        kind = "empty" if state == "occluded" else state
        assert kind in OTHER_KINDS
        readout, cut = _other_readout(self.spec, kind, self.words)
        return self.crop(f, readout, cut, over=state == "occluded")


def _paint(frame: np.ndarray, f: int, painter, values, spells) -> str:
    """Draw one region of frame ``f``: its readout, or an 'other' state during a spell; its class.
    A panel drawn over the region (``occluded``) also covers a margin around it, in its mean colour."""
    state = next((s for a, b, s in spells if a <= f < b), None)
    x, y, bw, bh = painter.box
    if state is None:
        name, readout = values[f]
        frame[y:y + bh, x:x + bw] = painter.crop(f, readout)
        return name
    crop = painter.other(f, state)
    if state == "occluded":
        frame[max(0, y - 6):y + bh + 6, max(0, x - 10):x + bw + 10] = crop.reshape(-1, 3).mean(0).astype(np.uint8)
    frame[y:y + bh, x:x + bw] = crop
    return OTHER


def screen_frames(game: str, *, seconds: float = 60.0, fps: int = 30, size: tuple[int, int] = (1280, 720),
                  seed: int = 0):
    """(layout regions, an iterator of (RGB frame (H, W, 3) uint8, its regions' classes)) of a
    match, before encoding: what :func:`write_screens` encodes and writes as truth."""
    if game not in GAMES:
        raise UsageError(f"unknown game {game!r}; the games are {', '.join(GAMES)}")
    frames = max(1, int(round(seconds * fps)))
    rng = np.random.default_rng([seed, list(GAMES).index(game)])
    regions = GAMES[game]
    painters = [_RegionPainter(r, rng, fps, size) for r in regions]
    values = [_readouts(r.task, rng, frames, fps) for r in regions]
    spells = [_other_spells(rng, frames, fps) for _ in regions]
    scene = _Scene(rng, size, fps)
    layout = [{"name": r.name, "box": p.box, "checkpoint": r.task, "task": r.task} for r, p in zip(regions, painters)]

    def draw():
        for f in range(frames):
            frame = scene.frame(f)
            yield frame, [_paint(frame, f, p, values[i], spells[i]) for i, p in enumerate(painters)]
    return layout, draw()


def write_screens(out_dir: str | Path, game: str, *, seconds: float = 60.0, fps: int = 30,
                  size: tuple[int, int] = (1280, 720), seed: int = 0, crf: int = CRF, overwrite: bool = False,
                  progress=None, command: str | None = None) -> dict:
    """Write ``out_dir``/video.mp4, layout.json, truth.csv and manifest.json; returns the manifest.
    ``size`` is (width, height); ``progress(k)`` after each k frames."""
    import av

    if game not in GAMES:
        raise UsageError(f"unknown game {game!r}; the games are {', '.join(GAMES)}")
    if not (isinstance(fps, int) and 1 <= fps <= 240) or not seconds > 0:
        raise UsageError(f"fps must be an int in 1..240 and seconds > 0, got fps={fps!r}, seconds={seconds!r}")
    w, h = size
    if w % 2 or h % 2 or w < 320 or h < 180:
        raise UsageError(f"size must be even and at least 320x180 (H.264, room for the HUD), got {w}x{h}")
    out = Path(out_dir)
    if (out / "video.mp4").exists() and not overwrite:
        raise OutputExistsError(f"{out / 'video.mp4'} exists; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    regions, frames = screen_frames(game, seconds=seconds, fps=fps, size=size, seed=seed)
    truth_rows = []
    tmp = out / "video.mp4.partial"
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.options = {"preset": "veryfast", "crf": str(crf)}
        for f, (frame, classes) in enumerate(frames):
            truth_rows += [(f, r["name"], c) for r, c in zip(regions, classes)]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            if progress is not None:
                progress(1)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(out / "video.mp4")
    with open(out / "truth.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(("frame", "region", "class"))
        wr.writerows(truth_rows)
    layout = {"frame_size": [w, h], "regions": regions}
    (out / "layout.json").write_text(json.dumps(layout, indent=2) + "\n")
    manifest = {"generator": SCREENS_VERSION, "game": game, "seconds": seconds, "fps": fps,
                "frames": len(truth_rows) // len(regions), "size": [w, h], "seed": seed, "crf": crf, "codec": "libx264 yuv420p",
                "video_bytes": (out / "video.mp4").stat().st_size,
                "regions": layout["regions"], "other_frames": {r["name"]: sum(1 for f, n, c in truth_rows
                                                                              if n == r["name"] and c == OTHER)
                                                               for r in regions},
                "command": command, "av": av.__version__}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
