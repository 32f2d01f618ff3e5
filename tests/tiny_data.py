"""Small generated data shared by the tests (imported as ``tiny_data``: pytest puts tests/ on sys.path)."""

import pytest
import torch

from foldcnn.data.base import ArrayDataset


def easy_dataset(n: int, seed: int, size=(16, 16)) -> ArrayDataset:
    """3 classes told apart by which colour channel is bright: a model learns it in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 3, *size), generator=g, dtype=torch.uint8)
    images[torch.arange(n), labels] += 150
    return ArrayDataset(images, labels, ["r", "g", "b"])


def truncated_video(path, frames: int = 40, keep: int = 17, size=(32, 32)):
    """A "faststart" MP4 (index first, as web videos are) of ``frames`` noise frames, cut at the start
    of packet ``keep``: it declares ``frames`` frames but decodes ``keep`` of them without an error,
    which is what a half-copied download looks like. Returns ``(cut_path, whole_path)``."""
    import av
    import numpy as np

    whole = path.with_name(path.stem + "_whole.mp4")
    h, w = size
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), format="rgb24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with av.open(str(whole)) as c:
        starts = sorted(p.pos for p in c.demux(c.streams.video[0]) if p.size)
    path.write_bytes(whole.read_bytes()[:starts[keep]])
    return path, whole


def gop_video(path, frames: int = 90, gop: int = 10, open_gop: bool = False, size=(48, 64), faststart=False):
    """An H.264 MP4 of moving noise with a key frame every ``gop`` frames (B-frames reordered;
    ``open_gop``: the key frames' leading B-frames refer to the group before), for the key-frame
    segment tests. ``size`` is (H, W). Returns the path."""
    import av
    import numpy as np

    h, w = size
    rng = np.random.default_rng(gop)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "crf": "20",
                     **({"x264-params": "open-gop=1"} if open_gop else {})}
        for i in range(frames):
            img = np.roll(base, 2 * i, axis=1)
            img[:6, :6] = (7 * i) % 256  # every frame differs from its neighbours
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def trained_easy_model():
    """A briefly trained fold=2 game CNN (100% on the easy task): (model in eval mode, 64 uint8
    training images for int8 calibration, a 96-image test set)."""
    from foldcnn.models import create_model
    from foldcnn.train.config import TrainConfig
    from foldcnn.train.loop import train_model

    torch.manual_seed(0)
    m = create_model("lol-gold-fraction", fold=2, num_classes=3, input_size=(16, 16))
    train = easy_dataset(200, 0)
    train_model(m, train, easy_dataset(64, 1), TrainConfig(epochs=4, batch_size=32, lr=3e-3), progress=False)
    return m.eval(), train.images[:64], easy_dataset(96, 2)


def write_folder(root, layout: dict, seed: int = 0):
    """layout: {split: {class: [(H, W), ...]}} -> PNG files with the class colour bright
    (split "." writes the class folders into ``root`` itself: the unsplit layout)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, classes in layout.items():
        for ci, (name, sizes) in enumerate(sorted(classes.items())):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i, (h, w) in enumerate(sizes):
                arr = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
                arr[..., ci % 3] += 150
                Image.fromarray(arr).save(root / split / name / f"{i}.png")
    return root


def write_user_module(tmp_path, monkeypatch, source: str, prefix: str = "user_cnn") -> str:
    """A user's model file in a fresh current directory, importable as the returned module name
    (unique, so no earlier test's import is cached), as `foldcnn ... pkg.module:Name` finds it."""
    import uuid

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# Users' CNNs for the tests of models by import path (written out by write_user_module): good
# ones of several shapes and the bad kinds `foldcnn fold` must refuse in one sentence.
USER_CNNS = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=5, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.relu(y + self.conv2(y))
        return self.fc(torch.flatten(self.pool(y), 1))


def make(num_classes=4):
    return Net(num_classes=num_classes)


def not_a_module():
    return 3


def raises(**kw):
    raise RuntimeError("bad builder")


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(7, 2)

    def forward(self, x):
        return self.fc(x)


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, groups=3)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x).mean((2, 3), keepdim=True), 1))


class WithShape(Net):
    input_shape = (3, 8, 10)


class NoBias(nn.Module):
    def __init__(self, num_classes=5, width=8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        y = self.conv2(self.conv(x).relu()).relu()
        return self.fc(self.pool(y).flatten(1))
'''


def random_images(n: int, seed: int = 0, size=(12, 16)) -> torch.Tensor:
    """uint8 (n, 3, H, W) noise images."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g)


def tiny_model(fold: int, seed: int = 0, num_classes: int = 5, size=(12, 16)):
    """A small game CNN in eval mode: fast on a busy CPU."""
    from foldcnn import create_model

    torch.manual_seed(seed)
    return create_model("lol-gold-fraction", fold=fold, num_classes=num_classes, input_size=size).eval()


def write_pngs(folder, x: torch.Tensor, names=None) -> list:
    """uint8 (n, 3, H, W) -> PNG files ``folder/00000.png`` ... (or ``names``); returns their paths."""
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(x.numpy().transpose(0, 2, 3, 1)):
        p = folder / (names[i] if names else f"{i:05d}.png")
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread for a test module (import this name to use it): tiny models gain nothing
    from more, and a busy machine punishes them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
