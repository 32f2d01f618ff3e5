"""Arithmetic-intensity analysis (FLOPs and bytes the way the FoldedCNNs paper counts them)
and a roofline prediction of images/s on datasheet or measured devices.

Imports torch only: no matplotlib, no onnxruntime.
"""

from foldcnn.analysis.counting import AnalysisReport, LayerCount, analyze, count_layer, summarize
from foldcnn.analysis.roofline import DEVICES, Attainable, Device, attainable, measure_peak

__all__ = [
    "analyze", "AnalysisReport", "LayerCount", "count_layer", "summarize",
    "DEVICES", "Device", "Attainable", "attainable", "measure_peak",
]
