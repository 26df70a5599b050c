"""Scores for graded findings: the RSNA 2024 metric and the LSS foraminal scores.

The RSNA score is what the public leaderboard used, so numbers reported here can be set
beside published ones: a sample-weighted log loss per condition group (weights 1/2/4 by the
true grade, so missing a severe case costs four times a normal one) plus an any-severe-spinal
term, averaged with equal weight. Implemented once and used by training, calibration and the
benchmark so that every reported number means the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lumbar_common.vocabulary import (
    CANAL,
    FORAMEN,
    GRADE_WEIGHTS,
    GRADES,
    LSS_GRADES,
    SUBARTICULAR,
    parse_rsna_key,
)

#: clip applied to probabilities before the logarithm, as scikit-learn's log_loss does
EPS: float = 1e-15
#: condition groups of the RSNA metric (left and right are pooled)
GROUPS: tuple[str, ...] = (CANAL, FORAMEN, SUBARTICULAR)


def grade_index(grade: str | int) -> int:
    """Index 0/1/2 of an RSNA grade string (or an index already)."""
    if isinstance(grade, (int, np.integer)):
        if not 0 <= int(grade) < len(GRADES):
            raise ValueError(f"grade index must be 0..2, got {grade!r}")
        return int(grade)
    if grade not in GRADES:
        raise ValueError(f"unknown grade {grade!r}; expected one of {GRADES}")
    return GRADES.index(grade)


def _normalise(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"probabilities must be (n, 3), got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("probabilities must be finite and non-negative")
    sums = p.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise ValueError("a probability row sums to zero")
    return np.clip(p / sums, EPS, 1 - EPS)


def weighted_log_loss(labels: Sequence[int], probs: np.ndarray) -> float:
    """Sample-weighted 3-class log loss with RSNA weights 1/2/4 by the true grade."""
    y = np.asarray([grade_index(v) for v in labels], dtype=np.int64)
    p = _normalise(probs)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} probability rows")
    if len(y) == 0:
        raise ValueError("no labelled rows to score")
    w = np.asarray(GRADE_WEIGHTS, dtype=np.float64)[y]
    return float(np.sum(-w * np.log(p[np.arange(len(y)), y])) / np.sum(w))


def binary_log_loss(
    labels: Sequence[int], p_pos: Sequence[float], weights: Sequence[float]
) -> float:
    """Weighted binary log loss (the any-severe-spinal term)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(p_pos, dtype=np.float64), EPS, 1 - EPS)
    w = np.asarray(weights, dtype=np.float64)
    if not (len(y) == len(p) == len(w)) or len(y) == 0:
        raise ValueError("labels, predictions and weights must be non-empty and of equal length")
    return float(np.sum(-w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / np.sum(w))


def rsna_score(
    truth: Mapping[str, Mapping[str, str]],
    predictions: Mapping[str, Mapping[str, Sequence[float]]],
) -> dict[str, float]:
    """RSNA 2024 score of ``predictions`` against ``truth``.

    Both map study id -> {rsna column -> value}; truth values are grade strings (a missing or
    empty value means "not labelled" and the row is skipped, as in the public data), predictions
    are [p_normal_mild, p_moderate, p_severe]. Returns each group's loss, ``any_severe_spinal``
    and ``score`` (their mean). A labelled finding without a prediction is an error: silently
    skipping it would flatter the score.
    """
    rows: dict[str, tuple[list[int], list[list[float]]]] = {g: ([], []) for g in GROUPS}
    sev_y: list[int] = []
    sev_p: list[float] = []
    sev_w: list[float] = []
    for study, labels in truth.items():
        if study not in predictions:
            raise ValueError(f"no predictions for study {study!r}")
        pred = predictions[study]
        spinal_y: list[int] = []
        spinal_p: list[float] = []
        for key, grade in labels.items():
            if grade is None or grade == "" or (isinstance(grade, float) and np.isnan(grade)):
                continue
            condition, _side, _level = parse_rsna_key(key)
            if key not in pred:
                raise ValueError(f"study {study!r}: labelled finding {key!r} has no prediction")
            y = grade_index(grade)
            p = [float(v) for v in pred[key]]
            rows[condition][0].append(y)
            rows[condition][1].append(p)
            if condition == CANAL:
                spinal_y.append(y)
                spinal_p.append(float(_normalise(np.asarray([p]))[0, 2]))
        if spinal_y:
            sev_y.append(int(max(spinal_y) == 2))
            sev_p.append(max(spinal_p))
            sev_w.append(GRADE_WEIGHTS[max(spinal_y)])
    out: dict[str, float] = {}
    for group, (ys, ps) in rows.items():
        if ys:
            out[group] = weighted_log_loss(ys, np.asarray(ps))
    if sev_y:
        out["any_severe_spinal"] = binary_log_loss(sev_y, sev_p, sev_w)
    if not out:
        raise ValueError("no labelled findings to score")
    out["score"] = float(np.mean(list(out.values())))
    return out


def uniform_predictions(
    truth: Mapping[str, Mapping[str, str]],
) -> dict[str, dict[str, list[float]]]:
    """The no-information baseline: 1/3 for every grade of every labelled finding."""
    return {s: {k: [1 / 3, 1 / 3, 1 / 3] for k in labels} for s, labels in truth.items()}


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Rows are the true class, columns the predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        if not (0 <= t < n_classes and 0 <= p < n_classes):
            raise ValueError(f"class out of range 0..{n_classes - 1}: true {t}, predicted {p}")
        cm[t, p] += 1
    return cm


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if len(t) != len(p) or len(t) == 0:
        raise ValueError("accuracy needs equal, non-empty label lists")
    return float(np.mean(t == p))


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Unweighted mean F1 over the classes present in truth or prediction (sklearn's rule)."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    f1s: list[float] = []
    for c in range(n_classes):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        fn = cm[c, :].sum() - tp
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def lss_scores(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1 on the LSS 0-3 foraminal scheme (paper: 0.72 / 0.61)."""
    n = len(LSS_GRADES)
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred, n)}
