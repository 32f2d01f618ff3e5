"""Scale-out: offline folded inference over many images and videos on a Ray cluster.

``run_ray_predict`` lives in :mod:`foldcnn.scaleout.ray_engine`; Ray itself is imported only
when it runs (``pip install 'foldcnn[ray]'``), so importing this package stays light.
"""

from __future__ import annotations

__all__ = ["run_ray_predict"]


def __getattr__(name: str):
    if name == "run_ray_predict":
        from foldcnn.scaleout.ray_engine import run_ray_predict

        return run_ray_predict
    raise AttributeError(f"module 'foldcnn.scaleout' has no attribute {name!r}")
