"""Out-of-distribution gate of the learned grader: is this crop like the ones it learned from?

The learned grader is trained on synthetic studies only. On a real patient's MRI its crops
can look nothing like those, and a network answers anyway — often with near-certainty. The
gate measures, per condition group, how far the encoder embedding of a crop lies from the
embeddings of the synthetic training crops: the Mahalanobis distance to their mean under a
shrunk (Ledoit–Wolf) covariance (Lee et al. 2018, "A simple unified framework for detecting
out-of-distribution samples"). The limit of each group is a high percentile of the
distances of synthetic *validation* crops, which the statistics never saw, so about
``100 - PERCENTILE`` % of in-distribution crops are flagged by construction.

The reported ``score`` is the distance divided by that limit, so the threshold is 1.0 for
every group and a score of 3 reads "three times as far as the synthetic validation crops
go". The statistics live in the weights file (``grader.pt``), so the card's sha256 guards
them together with the weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: condition group -> crop arrays (encoder inputs) that belong to it
GROUP_CROPS: dict[str, tuple[str, ...]] = {
    "canal": ("canal",), "foramen": ("for_l", "for_r"), "subarticular": ("ax_l", "ax_r"),
}
#: which presence flag a group needs (None: the sagittal T2/STIR, always present)
GROUP_PRESENCE: dict[str, int | None] = {"canal": None, "foramen": 0, "subarticular": 1}
#: percentile of synthetic validation distances that sets each group's limit
PERCENTILE = 99.0
THRESHOLD = 1.0
METHOD = ("Mahalanobis distance of the crop's encoder embedding from the synthetic training "
          "crops (mean, Ledoit-Wolf covariance) per condition group, divided by the "
          f"{PERCENTILE:g}th percentile of synthetic validation crops; flagged above 1.0")


def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Shrunk covariance of the rows of ``x`` (Ledoit & Wolf 2004).

    A 64-dimensional embedding from a few hundred crops gives a singular sample
    covariance (post-ReLU units that never fire); shrinking towards a scaled identity keeps
    the inverse finite without a hand-picked ridge.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {n}")
    xc = x - x.mean(axis=0)
    s = xc.T @ xc / n
    mu = float(np.trace(s)) / d
    delta = float(np.sum((s - mu * np.eye(d)) ** 2)) / d
    beta = float(sum(np.sum((np.outer(r, r) - s) ** 2) for r in xc)) / (d * n * n)
    shrink = 0.0 if delta <= 0 else min(beta, delta) / delta
    cov = (1 - shrink) * s + shrink * mu * np.eye(d)
    if mu <= 0:  # every embedding identical: any other one is infinitely far
        cov = cov + 1e-6 * np.eye(d)
    return cov


def mahalanobis(emb: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Distances of the rows of ``emb`` (n, d) from ``mean`` under ``precision``."""
    diff = np.atleast_2d(np.asarray(emb, dtype=np.float64)) - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", diff, precision, diff), 0.0))


def fit_group(train_emb: np.ndarray, val_emb: np.ndarray,
              percentile: float = PERCENTILE) -> dict[str, np.ndarray | float | int]:
    """Mean and precision from training embeddings, limit from validation embeddings."""
    if len(val_emb) == 0:
        raise ValueError("no validation embeddings to set the limit from")
    mean = np.asarray(train_emb, dtype=np.float64).mean(axis=0)
    precision = np.linalg.inv(ledoit_wolf(train_emb))
    limit = float(np.percentile(mahalanobis(val_emb, mean, precision), percentile))
    return {"mean": mean, "precision": precision, "limit": max(limit, 1e-9),
            "n_train": len(train_emb), "n_val": len(val_emb)}


def group_embeddings(emb: Mapping[str, np.ndarray], presence: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """Stack a batch's crop embeddings per group, keeping only crops whose series exists."""
    out = {}
    for group, keys in GROUP_CROPS.items():
        flag = GROUP_PRESENCE[group]
        ok = np.ones(len(presence), bool) if flag is None else presence[:, flag] > 0
        out[group] = np.concatenate([np.asarray(emb[k])[ok] for k in keys])
    return out


class OodGate:
    """Per-group statistics and the verdict for one embedding."""

    def __init__(self, stats: Mapping[str, Mapping[str, object]]) -> None:
        missing = [g for g in GROUP_CROPS if g not in stats]
        if missing:
            raise ValueError(f"out-of-distribution statistics lack groups {missing}")
        self.stats = {g: {"mean": np.asarray(s["mean"], np.float64),
                          "precision": np.asarray(s["precision"], np.float64),
                          "limit": float(s["limit"])}  # type: ignore[arg-type]
                      for g, s in stats.items() if g in GROUP_CROPS}

    def scores(self, group: str, emb: np.ndarray) -> np.ndarray:
        s = self.stats[group]
        return mahalanobis(emb, s["mean"], s["precision"]) / s["limit"]

    def verdict(self, group: str, score: float) -> dict:
        """The ``ood`` dict of one finding: flagged, score, threshold, reason."""
        flagged = bool(score > THRESHOLD) or not np.isfinite(score)
        reason = None
        if flagged:
            reason = (f"learned grader: {group} crop unlike its synthetic training data "
                      f"(embedding distance {score:.1f}x the synthetic validation limit)")
        return {"flagged": flagged, "score": round(float(score), 3) if np.isfinite(score)
                else 1e6, "threshold": THRESHOLD, "reason": reason}

    def to_checkpoint(self) -> dict:
        """Plain tensors and floats (loadable with ``torch.load(weights_only=True)``)."""
        import torch

        return {g: {"mean": torch.as_tensor(s["mean"]),
                    "precision": torch.as_tensor(s["precision"]), "limit": float(s["limit"])}
                for g, s in self.stats.items()}

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, object]) -> OodGate:
        stats = ckpt.get("ood")
        if not isinstance(stats, Mapping):
            raise ValueError("these weights carry no out-of-distribution statistics; "
                             "recalibrate them (lumbar-node train grader ... --recalibrate)")
        return cls({g: {k: (v.cpu().numpy() if hasattr(v, "cpu") else v)
                        for k, v in s.items()} for g, s in stats.items()})


def fit_gate(train_emb: Mapping[str, np.ndarray], train_presence: np.ndarray,
             val_emb: Mapping[str, np.ndarray], val_presence: np.ndarray
             ) -> tuple[OodGate, dict]:
    """The gate and a card summary (limits and sample counts per group)."""
    tr = group_embeddings(train_emb, train_presence)
    va = group_embeddings(val_emb, val_presence)
    stats = {g: fit_group(tr[g], va[g]) for g in GROUP_CROPS}
    card = {"method": METHOD, "threshold": THRESHOLD, "percentile": PERCENTILE,
            "fitted_on": "mean/covariance: synthetic training crops; limit: synthetic "
                         "validation crops (every geometry draw)",
            "groups": {g: {"distance_limit": round(float(s["limit"]), 3),
                           "train_crops": int(s["n_train"]), "validation_crops": int(s["n_val"])}
                       for g, s in stats.items()}}
    return OodGate(stats), card


def embed_split(net: object, data: Mapping[str, np.ndarray], device: str,
                batch: int = 128) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Logits, LSS logits and crop embeddings of a cached split (no augmentation)."""
    import torch

    keys = ("canal", "for_l", "for_r", "ax_l", "ax_r")
    outs, lsss, embs = [], [], {k: [] for k in keys}
    net.eval()  # type: ignore[attr-defined]
    n = len(data["presence"])
    with torch.inference_mode():
        for i in range(0, n, batch):
            sl = slice(i, min(i + batch, n))

            def t(name: str, dtype: torch.dtype = torch.float32,
                  sl: slice = sl) -> torch.Tensor:
                return torch.as_tensor(np.asarray(data[name][sl])).to(dtype).to(device)

            o, q, e = net.forward_with_embeddings(  # type: ignore[attr-defined]
                *(t(k) for k in keys), t("presence"), t("level", torch.long), t("feats"))
            outs.append(o.cpu().numpy())
            lsss.append(q.cpu().numpy())
            for k in keys:
                embs[k].append(e[k].cpu().numpy())
    return (np.concatenate(outs), np.concatenate(lsss),
            {k: np.concatenate(v) for k, v in embs.items()})
