"""Online serving with fold-aware dynamic batching (``foldcnn serve``).

The batcher, metrics and validation are plain Python; fastapi/uvicorn are imported only when
:func:`create_app` builds the app or the CLI runs the server.
"""

from foldcnn.serve.app import ServeConfig, create_app
from foldcnn.serve.batcher import BatcherClosed, BatcherStats, BatchFailed, FoldBatcher, QueueFull, QueueTimeout
from foldcnn.serve.isolation import checkpoint_fold_invariant
from foldcnn.serve.metrics import ServeMetrics
from foldcnn.serve.validation import ImageLimits, RequestError, decode_image, decode_images

__all__ = ["ServeConfig", "create_app", "FoldBatcher", "BatcherStats", "BatchFailed", "BatcherClosed",
           "QueueFull", "QueueTimeout", "checkpoint_fold_invariant", "ServeMetrics", "ImageLimits", "RequestError", "decode_image", "decode_images"]
