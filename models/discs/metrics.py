"""Agreement figures between the disc grader and the expert, written out so that the CV,
the evaluation command and the tests compute them one way.

Balanced accuracy (mean recall over the grades present) rather than accuracy, because the
grades are far from uniform (Modic 0 is two thirds of discs, slip 3 %): a model that always
says "normal" must not look good. Linear-weighted kappa and the share off by more than one
grade describe ordinal agreement, as radiologists' own Pfirrmann agreement is reported.
"""

from __future__ import annotations

import numpy as np

#: the brief's goals, shown beside the measured figures
GOALS: dict[str, tuple[str, float]] = {
    "pfirrmann.balanced_accuracy": (">=", 0.70), "pfirrmann.kappa_linear": (">=", 0.65),
    "pfirrmann.off_by_more_than_one": ("<=", 0.03),
    "modic.presence_balanced_accuracy": (">=", 0.80),
    "narrowing.auc": (">=", 0.85), "herniation.auc": (">=", 0.85),
    "bulging.auc": (">=", 0.85), "spondylolisthesis.auc": (">=", 0.85),
}


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (nan without labels)."""
    y, pred = np.asarray(y), np.asarray(pred)
    if y.shape != pred.shape:
        raise ValueError(f"labels {y.shape} and predictions {pred.shape} differ in shape")
    classes = np.unique(y)
    if len(classes) == 0:
        return float("nan")
    return float(np.mean([np.mean(pred[y == c] == c) for c in classes]))


def kappa_linear(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Cohen's kappa with linear weights |i - j| / (n - 1)."""
    y, pred = np.asarray(y, int), np.asarray(pred, int)
    if len(y) == 0:
        return float("nan")
    if y.min() < 0 or pred.min() < 0 or max(y.max(), pred.max()) >= n_classes:
        raise ValueError(f"grades must lie in 0..{n_classes - 1}")
    observed = np.zeros((n_classes, n_classes))
    np.add.at(observed, (y, pred), 1.0)
    observed /= observed.sum()
    expected = np.outer(observed.sum(1), observed.sum(0))
    i, j = np.meshgrid(np.arange(n_classes), np.arange(n_classes), indexing="ij")
    w = np.abs(i - j) / (n_classes - 1)
    denom = float((w * expected).sum())
    return float("nan") if denom == 0 else float(1.0 - (w * observed).sum() / denom)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count one half); nan when one class is absent."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def finding_metrics(probs: dict[str, np.ndarray], targets: dict[str, np.ndarray]
                    ) -> dict[str, dict[str, float]]:
    """Figures per finding from probabilities (pfirrmann [n,5], modic [n,4], binary [n])."""
    out: dict[str, dict[str, float]] = {}
    y, p = targets["pfirrmann"], probs["pfirrmann"].argmax(1)
    out["pfirrmann"] = {"balanced_accuracy": balanced_accuracy(y, p),
                        "kappa_linear": kappa_linear(y, p, 5),
                        "off_by_more_than_one": float(np.mean(np.abs(y - p) > 1)),
                        "accuracy": float(np.mean(y == p)), "n": float(len(y))}
    y, p = targets["modic"], probs["modic"].argmax(1)
    out["modic"] = {"balanced_accuracy": balanced_accuracy(y, p),
                    "kappa_linear": kappa_linear(y, p, 4),
                    "presence_balanced_accuracy": balanced_accuracy(y > 0, p > 0),
                    "presence_auc": auc(1.0 - probs["modic"][:, 0], (y > 0).astype(int)),
                    "n": float(len(y))}
    for name, prob in probs.items():
        if prob.ndim != 1:
            continue
        t = targets[name]
        out[name] = {"auc": auc(prob, t), "balanced_accuracy": balanced_accuracy(t, prob >= 0.5),
                     "positives": float(t.sum()), "n": float(len(t))}
    return out


def summarise(per_fold: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean and sd over folds of every figure (``<name>_mean``, ``<name>_sd``)."""
    out: dict[str, dict[str, float]] = {}
    for finding in per_fold[0]:
        row = {}
        for key in per_fold[0][finding]:
            values = np.array([f[finding][key] for f in per_fold], float)
            if key in ("n", "positives"):
                row[key] = float(np.nansum(values))
                continue
            row[f"{key}_mean"] = round(float(np.nanmean(values)), 4)
            row[f"{key}_sd"] = round(float(np.nanstd(values)), 4)
        out[finding] = row
    return out


def goal_met(name: str, value: float) -> bool | None:
    if name not in GOALS or not np.isfinite(value):
        return None
    op, target = GOALS[name]
    return value >= target if op == ">=" else value <= target


def table(summary: dict[str, dict[str, float]]) -> str:
    """Human-readable table of the summary, goals marked."""
    lines = [f"{'finding':18s} {'figure':30s} {'mean':>7s} {'sd':>6s}  goal"]
    for finding, row in summary.items():
        for key in row:
            if not key.endswith("_mean"):
                continue
            base = key[:-5]
            name = f"{finding}.{base}"
            met = goal_met(name, row[key])
            goal = "" if met is None else f"{GOALS[name][0]} {GOALS[name][1]:.2f} " + (
                "met" if met else "NOT met")
            lines.append(f"{finding:18s} {base:30s} {row[key]:7.3f} {row[base + '_sd']:6.3f}"
                         f"  {goal}")
    return "\n".join(lines)


def headline(summary: dict[str, dict[str, float]]) -> dict[str, float]:
    """The goal figures' fold means as one flat group (what ``lumbar-node models list``
    shows)."""
    out = {}
    for name in GOALS:
        finding, key = name.split(".")
        value = summary.get(finding, {}).get(f"{key}_mean")
        if value is not None:
            out[name] = value
    return out
