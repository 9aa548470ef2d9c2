"""The one evaluation path: sliding-window inference on whole volumes and per-case, per-class Dice.

Empty-ground-truth policy: a class absent from a case's ground truth gets Dice = NaN for that
case (``gt_present`` False) whatever was predicted, and ``pred_present`` records whether the
model predicted it anyway (a false positive that Dice cannot score). A class present in the
ground truth but not predicted gets 0. Aggregates average each class over the cases where it
is present, then average over classes ("clean mean"); see README "Metrics".
"""
from __future__ import annotations

import math

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot

from dgbench.amp import autocast
from dgbench.progress import progress as progress_bar


def whole_volume_minmax(image: np.ndarray) -> np.ndarray:
    """Test-time intensity scaling: min-max over the whole volume (training scales each crop)."""
    image = np.array(image, dtype=np.float32)
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


@torch.no_grad()
def predict(net, method, image: torch.Tensor, roi, overlap: float, sw_batch_size: int,
            amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Argmax label map (D, H, W) of one volume image (1, 1, D, H, W) already on the device."""
    def predictor(window: torch.Tensor) -> torch.Tensor:
        with autocast(window.device, amp_dtype):
            return net(method.infer_input(window)).float()
    logits = sliding_window_inference(image, roi_size=tuple(roi), sw_batch_size=sw_batch_size,
                                      predictor=predictor, overlap=overlap, mode="constant")
    return logits.argmax(1)[0]


def dice_per_class(pred: torch.Tensor, label: torch.Tensor, n_classes: int) -> list[tuple[float, bool, bool]]:
    """[(dice, gt_present, pred_present)] for classes 1..n_classes-1 (MONAI DiceMetric, no background).

    dice is NaN where the class is absent from the ground truth."""
    p = one_hot(pred.reshape(1, 1, *pred.shape).long(), n_classes)
    g = one_hot(label.reshape(1, 1, *label.shape).long(), n_classes)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(p, g)[0]
    gt_present = g[0, 1:].flatten(1).any(1)
    pred_present = p[0, 1:].flatten(1).any(1)
    return [(float(d), bool(gp), bool(pp)) for d, gp, pp in zip(dice.tolist(), gt_present, pred_present)]


def mean_dice(rows: list[dict]) -> float:
    """Clean mean: per-class mean over cases with the class present, then mean over those classes."""
    per_class: dict[int, list[float]] = {}
    for r in rows:
        if r["gt_present"]:
            per_class.setdefault(r["class"], []).append(r["dice"])
    means = [float(np.mean(v)) for v in per_class.values()]
    return float(np.mean(means)) if means else math.nan


def evaluate_cases(net, method, prepared, cases: list[tuple[str, str]], train_cfg, device,
                   amp_dtype=None, keep_predictions: set[str] | None = None, progress: bool = False,
                   desc: str = "evaluate"):
    """Evaluate (split, case_id) pairs. Returns (rows, predictions) with predictions for the
    case ids in keep_predictions as {case: (image, label, pred)} numpy arrays. ``progress``: a
    bar named ``desc`` (dgbench.progress: plain lines off a terminal)."""
    adapter = prepared.adapter
    rows, kept = [], {}
    was_training = net.training
    net.eval()
    bar = progress_bar(len(cases), desc, "case", disable=not progress)
    for split, case_id in cases:
        case = prepared.case(case_id)
        image = torch.from_numpy(whole_volume_minmax(case.image))[None, None].to(device)
        pred = predict(net, method, image, train_cfg.patch_size, train_cfg.sw_overlap,
                       train_cfg.sw_batch_size, amp_dtype).cpu()
        label = torch.from_numpy(np.array(case.label))
        for c, (d, gp, pp) in enumerate(dice_per_class(pred, label, adapter.n_classes), start=1):
            rows.append({"split": split, "domain": case.domain, "case": case_id, "class": c,
                         "class_name": adapter.classes.get(c, str(c)), "dice": d,
                         "gt_present": gp, "pred_present": pp})
        if keep_predictions and case_id in keep_predictions:
            kept[case_id] = (np.asarray(case.image, dtype=np.float16), np.asarray(case.label),
                             pred.numpy().astype(np.uint8))
        bar.update()
    bar.close()
    net.train(was_training)
    return rows, kept
