"""Dice per class, computed per patient over all its slices and then averaged.

Per-patient pooling matches how the SPIDER benchmark scores 3-D volumes (one Dice per scan),
so small structures on lateral slices do not count as many near-empty, noisy Dice values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lumbar_common.vocabulary import SEMANTIC_CLASSES

if TYPE_CHECKING:
    import torch

    from models.segmentation.data import SliceSet

#: Foreground classes reported, in the order of SEMANTIC_CLASSES[1:].
CLASS_NAMES: tuple[str, ...] = SEMANTIC_CLASSES[1:]


def dice_per_class(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of each foreground class over the whole array; NaN where both are empty."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} != truth shape {truth.shape}")
    scores = {}
    for value, name in enumerate(CLASS_NAMES, start=1):
        p, t = prediction == value, truth == value
        denominator = int(p.sum()) + int(t.sum())
        scores[name] = float("nan") if denominator == 0 else 2.0 * int((p & t).sum()) / denominator
    return scores


def mean_dice(per_set: dict[str, dict[str, float]]) -> dict[str, float]:
    """Average per-set Dice of each class (sets where a class is absent are skipped)."""
    out = {}
    for name in CLASS_NAMES:
        values = [d[name] for d in per_set.values() if not np.isnan(d[name])]
        out[name] = float(np.mean(values)) if values else float("nan")
    return out


def evaluate_sets(net: torch.nn.Module, sets: list[SliceSet],
                  device: torch.device) -> dict[str, dict[str, float]]:
    """Set key -> Dice per class, predicting in each set's own source grid."""
    from models.segmentation.infer import predict_slices

    if not sets:
        raise ValueError("no slice sets to evaluate")
    return {s.key: dice_per_class(predict_slices(net, s.images, s.spacing, device), s.labels)
            for s in sets}
