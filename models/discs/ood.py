"""Out-of-distribution check per disc: Mahalanobis distance of the crop's embedding from
the training discs' embeddings.

The disc grader learned from about a thousand discs of one data set; a crop that looks
like none of them (another sequence, a failed crop, noise, an implant) gets confident but
meaningless outputs. The distance is measured in the standardised multi-scale embedding
(:meth:`models.discs.net.DiscNet.embed`) with a shrunk covariance (a few hundred dimensions
from about a thousand discs), and divided by the median distance of the model's own
training discs, so that a threshold found under cross-validation (a high percentile of the
out-of-fold discs' scores: unseen patients under a model that never saw them) carries over
to the final model, whose in-sample distances are smaller than any new patient's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: weight of the identity in the shrunk covariance (of the standardised embedding)
SHRINKAGE = 0.2
#: out-of-fold percentile that becomes the threshold
THRESHOLD_PERCENTILE = 99.0


@dataclass
class EmbeddingStats:
    """Mean, scale and precision of the training embeddings, and the distance scale."""

    mean: np.ndarray
    std: np.ndarray
    precision: np.ndarray
    median_distance: float

    @classmethod
    def fit(cls, embeddings: np.ndarray, shrinkage: float = SHRINKAGE) -> EmbeddingStats:
        x = np.asarray(embeddings, np.float64)
        if x.ndim != 2 or len(x) < 10:
            raise ValueError(f"need at least 10 embeddings [n, d], got shape {x.shape}")
        if not 0.0 < shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}")
        mean, std = x.mean(0), x.std(0) + 1e-6
        z = (x - mean) / std
        cov = (1.0 - shrinkage) * np.cov(z, rowvar=False) + shrinkage * np.eye(z.shape[1])
        stats = cls(mean, std, np.linalg.inv(cov), 1.0)
        stats.median_distance = float(np.median(stats.distance(x)))
        return stats

    def distance(self, embeddings: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row."""
        z = (np.asarray(embeddings, np.float64) - self.mean) / self.std
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", z, self.precision, z), 0.0))

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Distance over the training discs' median distance (1 = a typical training disc)."""
        return self.distance(embeddings) / self.median_distance

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"ood_mean": self.mean.astype(np.float32), "ood_std": self.std.astype(np.float32),
                "ood_precision": self.precision.astype(np.float32),
                "ood_median_distance": np.array([self.median_distance], np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> EmbeddingStats:
        return cls(np.asarray(arrays["ood_mean"], np.float64),
                   np.asarray(arrays["ood_std"], np.float64),
                   np.asarray(arrays["ood_precision"], np.float64),
                   float(np.asarray(arrays["ood_median_distance"]).ravel()[0]))


def threshold_from(out_of_fold_scores: np.ndarray,
                   percentile: float = THRESHOLD_PERCENTILE) -> float:
    """The gate's threshold: a high percentile of out-of-fold scores."""
    scores = np.asarray(out_of_fold_scores, np.float64)
    scores = scores[np.isfinite(scores)]
    if len(scores) == 0:
        raise ValueError("no finite out-of-fold scores to set a threshold from")
    return float(np.percentile(scores, percentile))


def verdict(score: float, threshold: float) -> dict:
    """The ``ood`` entry of one disc."""
    flagged = bool(score > threshold)
    reason = (f"disc crop out of distribution: embedding distance {score:.2f} above "
              f"{threshold:.2f} (the {THRESHOLD_PERCENTILE:g}th percentile of unseen training "
              "patients' discs)") if flagged else None
    return {"flagged": flagged, "score": round(float(score), 4),
            "threshold": round(float(threshold), 4), "reason": reason}
