"""Inference: the Predictor turns any stream of images into per-image results, in input order.

    p = Predictor.from_checkpoint("runs/lol/checkpoint", backend="ort", batch_size=1024)
    for pred in p.predict_iter("frames/"):        # a folder, glob, video, tensor, PIL images, ...
        print(pred.source, pred.class_name, pred.confidence)
    print(p.stats.images_per_s, p.stats.padding_waste)

An exported graph runs without torch: ``Predictor("model.onnx")`` (docs/runtime.md).
"""

from foldcnn.infer.arrays import ImageSizeError
from foldcnn.infer.journal import ResumableWriter
from foldcnn.infer.options import PredictOptions
from foldcnn.infer.predictor import ON_ERROR, PARTIAL_MODES, Predictor
from foldcnn.infer.results import (
    Prediction,
    PredictionWriter,
    PredictStats,
    SkippedInput,
    write_predictions,
)
from foldcnn.infer.sources import VIDEO_EXTENSIONS

__all__ = [
    "ON_ERROR",
    "PARTIAL_MODES",
    "VIDEO_EXTENSIONS",
    "ImageSizeError",
    "PredictOptions",
    "PredictStats",
    "Prediction",
    "PredictionWriter",
    "Predictor",
    "ResumableWriter",
    "SkippedInput",
    "write_predictions",
]
