"""Fold-mate dependence: flip rate and top-1 spread over regroupings (foldcnn.infer.regrouping)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foldcnn.errors import UsageError
from foldcnn.infer.regrouping import regrouping_report, summarize_regroupings


def test_summary_counts_images_whose_class_changes_in_any_grouping():
    classes = [np.array([0, 1, 2, 3]), np.array([0, 1, 2, 0]), np.array([1, 1, 2, 3])]
    r = summarize_regroupings(classes, np.array([0, 1, 2, 3]), fold=2, seeds=(5, 6))
    assert r.flipped.tolist() == [True, False, False, True] and r.flip_rate == 0.5
    assert r.top1 == (1.0, 0.75, 0.75) and r.top1_spread == 0.25
    d = r.to_dict()
    assert d["top1_input_order"] == 1.0 and d["regroupings"] == 2 and d["seeds"] == [5, 6]


class _FoldPredictor:
    """predict_arrays over folds of f in input order; ``mix`` makes an image's class depend on its
    fold-mates (the class is the fold's summed value), else only on the image itself."""

    def __init__(self, fold: int, mix: bool):
        self.fold, self.mix = fold, mix

    def predict_arrays(self, images):
        v = images.reshape(len(images), -1)[:, 0].long().numpy()
        if not self.mix:
            return v % 3, None
        pad = -len(v) % self.fold
        groups = np.concatenate([v, np.zeros(pad, np.int64)]).reshape(-1, self.fold)
        return np.repeat(groups.sum(1) % 3, self.fold)[: len(v)], None


def test_independent_answers_never_flip_and_mixed_ones_do():
    images = torch.arange(24, dtype=torch.uint8).reshape(24, 1, 1, 1)
    labels = (np.arange(24) % 3)
    same = regrouping_report(_FoldPredictor(2, mix=False), images, labels, regroupings=5)
    assert same.flip_rate == 0 and same.top1 == (1.0,) * 6
    mixed = regrouping_report(_FoldPredictor(2, mix=True), images, labels, regroupings=5)
    assert mixed.flip_rate > 0 and len(mixed.top1) == 6


def test_regroupings_must_be_positive():
    with pytest.raises(UsageError, match="regroupings"):
        regrouping_report(_FoldPredictor(2, mix=False), torch.zeros(4, 1, 1, 1), regroupings=0)


def test_fold_one_model_through_the_predictor_has_no_flips():
    from foldcnn.infer import Predictor
    from foldcnn.models import create_model

    torch.manual_seed(0)
    model = create_model("sot-coin-count", fold=1)
    images = torch.randint(0, 256, (10, 3, 17, 40), dtype=torch.uint8)
    with Predictor(model, workers=0) as p:
        r = regrouping_report(p, images, regroupings=3)
    assert r.flip_rate == 0.0 and r.top1 is None
