"""foldcnn: fold f images into one input of a sqrt(f)-wider CNN (FoldedCNNs, ICML 2021).

``import foldcnn`` stays light: torch and the model zoo, nothing optional, no CUDA init.
"""

from foldcnn.fold import fold_images, pad_to_fold, padded_count, unfold_logits
from foldcnn.models import (
    FoldedCNN,
    ModelConfig,
    count_params,
    create_model,
    list_models,
    model_from_config,
)
from foldcnn.models.transform import FoldError, fold_model

__version__ = "0.2.0"

__all__ = [
    "__version__", "fold_images", "unfold_logits", "pad_to_fold", "padded_count",
    "FoldedCNN", "ModelConfig", "count_params", "create_model", "list_models", "model_from_config",
    "fold_model", "FoldError",
]
