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
