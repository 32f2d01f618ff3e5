"""Small generated data shared by the tests (imported as ``tiny_data``: pytest puts tests/ on sys.path)."""

import torch

from foldcnn.data.base import ArrayDataset


def easy_dataset(n: int, seed: int, size=(16, 16)) -> ArrayDataset:
    """3 classes told apart by which colour channel is bright: a model learns it in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 3, *size), generator=g, dtype=torch.uint8)
    images[torch.arange(n), labels] += 150
    return ArrayDataset(images, labels, ["r", "g", "b"])


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
