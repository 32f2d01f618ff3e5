"""Model zoo: every builder takes ``fold=`` and is found by name."""

from foldcnn.models.base import (
    DEFAULT_CHANNEL_MULTIPLE,
    FoldedCNN,
    ModelConfig,
    count_params,
    init_weights_,
    scaled_width,
)
from foldcnn.models.registry import (
    create_model,
    list_models,
    model_entry,
    model_from_config,
    register_model,
)

# Importing the builders registers them.
from foldcnn.models import game, noscope, resnet  # noqa: E402,F401  isort: skip
from foldcnn.models.game import GAME_TASKS, GameCNN, game_cnn  # noqa: E402
from foldcnn.models.noscope import NOSCOPE_MODELS, NoScopeCNN  # noqa: E402
from foldcnn.models.resnet import CifarResNet  # noqa: E402

__all__ = [
    "DEFAULT_CHANNEL_MULTIPLE", "FoldedCNN", "ModelConfig", "count_params", "init_weights_",
    "scaled_width", "create_model", "list_models", "model_entry", "model_from_config",
    "register_model", "GAME_TASKS", "GameCNN", "game_cnn", "NOSCOPE_MODELS", "NoScopeCNN",
    "CifarResNet",
]
