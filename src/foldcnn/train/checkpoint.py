"""Moved to :mod:`foldcnn.checkpoints` (a lower layer than training, so that inference reads
checkpoints without importing ``foldcnn.train``). This alias keeps old imports working."""

from foldcnn.checkpoints import *  # noqa: F401,F403
