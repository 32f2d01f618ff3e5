"""`foldcnn fold`: a user's CNN and images to a faster, verified, deployable model."""

from foldcnn.workflows.fold.options import FoldOptions
from foldcnn.workflows.fold.pipeline import REPORT_JSON, REPORT_MD, run_fold

__all__ = ["FoldOptions", "REPORT_JSON", "REPORT_MD", "run_fold"]
