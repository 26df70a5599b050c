"""Temperature scaling of grader logits.

A network trained to low loss is usually over-confident on unseen studies; the RSNA metric
punishes confident mistakes hard. One scalar temperature per condition group, fitted on a
validation split the network never trained on, fixes the confidence without changing any
predicted grade (argmax is invariant to the temperature) — Guo et al. 2017.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from lumbar_common.vocabulary import GRADE_WEIGHTS

#: the search range for the temperature; outside it the fit is telling us the model is broken
T_MIN, T_MAX = 0.05, 20.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, labels: Sequence[int], temperature: float = 1.0,
        weighted: bool = True) -> float:
    """Mean (RSNA-weighted by default) negative log-likelihood at a temperature."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(softmax(logits, temperature), 1e-15, 1.0)
    w = np.asarray(GRADE_WEIGHTS)[y] if weighted else np.ones(len(y))
    return float(np.sum(-w * np.log(p[np.arange(len(y)), y])) / np.sum(w))


def fit_temperature(logits: np.ndarray, labels: Sequence[int], weighted: bool = True) -> float:
    """Temperature minimising the validation NLL (searched in log space)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"need (n, k) logits and n labels, got {z.shape} and {len(y)}")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must be in 0..{z.shape[1] - 1}")
    res = minimize_scalar(
        lambda log_t: nll(z, y, float(np.exp(log_t)), weighted),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
    )
    return float(np.exp(res.x))
