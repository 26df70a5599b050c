"""Temperature scaling of grader logits (and the class-prior correction beside it).

A network trained to low loss is usually over-confident on unseen studies; the RSNA metric
punishes confident mistakes hard. One scalar temperature per condition group, fitted on a
validation split the network never trained on, fixes the confidence without changing any
predicted grade (argmax is invariant to the temperature) — Guo et al. 2017.

When training studies over-represent abnormal grades (they are slow to generate, so each one
should teach as much as possible), the network's class prior is wrong for real prevalence;
a per-class logit offset fitted together with the temperature on natural-prevalence
validation studies undoes that shift (a label-shift correction).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from lumbar_common.vocabulary import GRADE_WEIGHTS

#: temperature search range: a model with no validation mistakes would otherwise be sharpened
#: without limit (T -> 0), which turns the first unseen mistake into an enormous loss
T_MIN, T_MAX = 0.5, 20.0


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


def apply_calibration(logits: np.ndarray, temperature: float,
                      bias: np.ndarray | list[float] | None = None) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.float64)
    return softmax(z)


def fit_temperature_bias(logits: np.ndarray, labels: Sequence[int],
                         weighted: bool = True) -> tuple[float, list[float]]:
    """Temperature and per-class offsets (first class fixed at 0) minimising validation NLL."""
    from scipy.optimize import minimize

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"need (n, k) logits and n labels, got {z.shape} and {len(y)}")
    k = z.shape[1]
    w = np.asarray(GRADE_WEIGHTS)[y] if weighted and k == len(GRADE_WEIGHTS) else np.ones(len(y))

    def loss(params: np.ndarray) -> float:
        t = float(np.exp(np.clip(params[0], np.log(T_MIN), np.log(T_MAX))))
        bias = np.r_[0.0, params[1:]]
        p = np.clip(apply_calibration(z, t, bias), 1e-15, 1.0)
        # a weak pull towards no offset keeps a class absent from validation finite
        return float(np.sum(-w * np.log(p[np.arange(len(y)), y])) / np.sum(w)
                     + 1e-3 * np.sum(params[1:] ** 2))

    t0 = fit_temperature(z, y, weighted)
    res = minimize(loss, np.r_[np.log(t0), np.zeros(k - 1)], method="Nelder-Mead",
                   options={"maxiter": 2000, "xatol": 1e-4, "fatol": 1e-7})
    t = float(np.exp(np.clip(res.x[0], np.log(T_MIN), np.log(T_MAX))))
    return t, [0.0] + [float(b) for b in res.x[1:]]
