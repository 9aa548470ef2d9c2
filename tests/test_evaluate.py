"""Dice on hand-made volumes, the empty-ground-truth policy, and sliding-window inference."""
import math

import pytest
import torch

from conftest import method_context
from dgbench.evaluate import dice_per_class, mean_dice, predict
from dgbench.method import Method


def test_dice_values_by_hand():
    label = torch.zeros(8, 8, 8, dtype=torch.long)
    label[0:2, 0:2, 0:2] = 1                      # 8 voxels of class 1
    label[4:8, 4:8, 4:8] = 2                      # 64 voxels of class 2
    pred = torch.zeros_like(label)
    pred[0:2, 0:2, 0:1] = 1                       # 4 of the 8 class-1 voxels ...
    pred[6:8, 0:2, 0:1] = 1                       # ... plus 4 false positives
    pred[4:8, 4:8, 4:8] = 2                       # class 2 perfect
    pred[0, 7, 7] = 3                             # class 3 absent from GT, predicted once
    out = dice_per_class(pred, label, n_classes=5)
    assert out[0] == (pytest.approx(2 * 4 / (8 + 8)), True, True)
    assert out[1] == (pytest.approx(1.0), True, True)
    d3, gt3, pp3 = out[2]
    assert math.isnan(d3) and gt3 is False and pp3 is True     # false positive in an absent class: NaN, flagged
    d4, gt4, pp4 = out[3]
    assert math.isnan(d4) and not gt4 and not pp4


def test_missed_class_scores_zero():
    label = torch.zeros(6, 6, 6, dtype=torch.long)
    label[1:3, 1:3, 1:3] = 1
    d, gt, pp = dice_per_class(torch.zeros_like(label), label, n_classes=2)[0]
    assert d == 0.0 and gt and not pp


def test_clean_mean_skips_absent_classes():
    rows = [{"class": 1, "dice": 0.8, "gt_present": True}, {"class": 1, "dice": 0.6, "gt_present": True},
            {"class": 2, "dice": 1.0, "gt_present": True}, {"class": 2, "dice": float("nan"), "gt_present": False},
            {"class": 3, "dice": float("nan"), "gt_present": False}]
    assert mean_dice(rows) == pytest.approx((0.7 + 1.0) / 2)


class Threshold(torch.nn.Module):
    """Logits that make argmax = (x > 0.5): a network whose right answer is known."""
    def forward(self, x):
        return torch.cat([0.5 - x, x - 0.5], dim=1)


def test_sliding_window_covers_the_whole_volume():
    img = torch.zeros(1, 1, 40, 36, 48)
    img[0, 0, 5:30, 3:20, 10:47] = 1.0
    pred = predict(Threshold(), Method({}, method_context(n_classes=2)), img, roi=(16, 16, 16), overlap=0.5, sw_batch_size=4)
    assert pred.shape == (40, 36, 48)
    assert torch.equal(pred, (img[0, 0] > 0.5).long())
