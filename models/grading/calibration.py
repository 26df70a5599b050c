"""Temperature scaling of grader logits, and the class-prior correction kept beside it.

A network trained to low loss is usually over-confident on unseen studies; the RSNA metric
punishes confident mistakes hard. One scalar temperature per condition group, fitted on a
validation split the network never trained on, fixes the confidence without changing any
predicted grade (argmax is invariant to a positive temperature) — Guo et al. 2017. This is
the only calibration the learned grader applies (:func:`calibrated`).

When training studies over-represent abnormal grades, the network's class prior is wrong for
natural prevalence; per-class logit offsets fitted on natural-prevalence validation studies
undo that shift (a label-shift correction, :func:`fit_temperature_bias`). Offsets *can*
change the decision (raw logits [0, 0.5, 2.0] with offsets [0, -0.11, -2.52] turn Severe
into Moderate), so a grade would no longer be the network's own. The grader therefore does
not use them; :func:`apply_calibration` applies offsets only where they keep each input's
argmax (per input, otherwise that input gets the temperature alone), unless a caller asks
for the unconstrained correction explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities: same argmax as ``logits``, honest confidence."""
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return softmax(logits, float(temperature))


def apply_calibration(logits: np.ndarray, temperature: float,
                      bias: np.ndarray | list[float] | None = None,
                      preserve_argmax: bool = True) -> np.ndarray:
    """Temperature plus optional class-prior offsets.

    With ``preserve_argmax`` (the default) an input whose argmax the offsets would change
    gets the temperature alone, so the decision stays the network's; pass False only to
    study the unconstrained label-shift correction.
    """
    z = np.asarray(logits, dtype=np.float64)
    p_t = calibrated(z, temperature)
    if bias is None:
        return p_t
    p_b = softmax(z / float(temperature) + np.asarray(bias, dtype=np.float64))
    if not preserve_argmax:
        return p_b
    keep = (np.argmax(p_b, axis=-1) == np.argmax(z, axis=-1))[..., None]
    return np.where(keep, p_b, p_t)


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
        p = np.clip(apply_calibration(z, t, bias, preserve_argmax=False), 1e-15, 1.0)
        # a weak pull towards no offset keeps a class absent from validation finite
        return float(np.sum(-w * np.log(p[np.arange(len(y)), y])) / np.sum(w)
                     + 1e-3 * np.sum(params[1:] ** 2))

    t0 = fit_temperature(z, y, weighted)
    res = minimize(loss, np.r_[np.log(t0), np.zeros(k - 1)], method="Nelder-Mead",
                   options={"maxiter": 2000, "xatol": 1e-4, "fatol": 1e-7})
    t = float(np.exp(np.clip(res.x[0], np.log(T_MIN), np.log(T_MAX))))
    return t, [0.0] + [float(b) for b in res.x[1:]]


def fit_group_temperatures(data: Mapping[str, np.ndarray], logits: np.ndarray,
                           lss_logits: np.ndarray, groups: Sequence[str]) -> dict[str, dict]:
    """One temperature per condition group (and the LSS head) from a validation split.

    ``groups[j]`` names the group of output ``j``; outputs whose series was absent
    (``data["presence"]``: sagittal T1, axial T2) or whose label is unknown (-1) do not count.
    """
    calib: dict[str, dict] = {}
    t1 = data["presence"][:, 0] > 0
    ax = data["presence"][:, 1] > 0
    for group in dict.fromkeys(groups):
        cols = [j for j, g in enumerate(groups) if g == group]
        ok = ax if group == "subarticular" else t1 if group == "foramen" else np.ones_like(t1)
        z = np.concatenate([logits[ok, j] for j in cols])
        y = np.concatenate([data["y"][ok, j] for j in cols])
        z, y = z[y >= 0], y[y >= 0]
        if len(y) == 0:
            continue  # nothing labelled for this group: leave it uncalibrated
        calib[group] = {"temperature": round(fit_temperature(z, y), 4)}
    valid = (data["y_lss"] >= 0) & t1[:, None]
    if valid.any():  # no LSS grades (public RSNA data): the LSS head is not reported
        temp = fit_temperature(lss_logits[valid], data["y_lss"][valid], weighted=False)
        calib["lss"] = {"temperature": round(temp, 4)}
    return calib
