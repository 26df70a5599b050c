"""Out-of-distribution gate for the segmentation: is this input like what the model knows?

The segmenter always returns labels, even for a brain, a knee, a series whose orientation
tags are wrong or pure noise; downstream measurements would then be computed on nonsense.
This gate scores each study (whole sagittal series) and each level (a box around one disc
centre) and flags those that do not look like the lumbar sagittal MRI the network was
developed on, so their results go to review instead of being trusted.

Score (one number per study or level, higher = less like the development data)::

    score = uncertainty + implausibility

* ``uncertainty`` - mean ``1 - max softmax`` over the voxels the network called foreground
  (vertebra, disc or canal) in the region; 1.0 when it called none. On lumbar MRI the
  network is confident inside large, compact structures and unsure only on a thin rim, so
  this stays near 0.05-0.1; on foreign input it labels fragments (mostly rim) with low
  confidence, or nothing at all. Background voxels are left out: far from the spine they
  are confidently background on any input and would dilute the signal.
* ``implausibility`` - the mean shortfall ``max(0, 1 - observed / expected)`` of anatomical
  quantities on the midline (the slices richest in disc and canal): for a study vertebra
  area, disc count and canal area; for a level vertebra and disc area in the box.
  ``expected`` are minima any adult lumbar spine exceeds (``STUDY_FLOORS``,
  ``LEVEL_FLOORS``); lumbar input scores 0, input without a spine up to 1. A confident
  but anatomically empty answer (everything called background with certainty) is caught
  here, not by the uncertainty.

Both terms are on the same 0-1 scale and each can flag alone, so a plain sum is used and
no weights are tuned. The thresholds are fitted once per model by
``benchmarks/ood_segmentation.py`` on development data only (real validation patients and
synthetic studies) and stored in the model card's ``ood`` block, with the flag rates that
command measured on every population; this module only reads them.

Pure numpy (no torch): the pipeline calls it after segmentation on any machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from models.segmentation.preprocess import Orientation

if TYPE_CHECKING:
    from models.study import Volume

#: Anatomical minima on the midline for a whole study (mm^2 per slice, disc count).
#: A mid-sagittal L1-S1 view holds five discs and >= 4,000 mm^2 of bone; the canal is
#: ~15 mm x >= 150 mm. Half a field of view of lumbar spine still meets these.
STUDY_FLOORS: dict[str, float] = {"vertebra_mm2": 4000.0, "discs": 4.0, "canal_mm2": 500.0}
#: Minima in the level box (40 mm cranio-caudal x 60 mm AP): bone of the body above (SPIDER
#: labels no sacrum, so at L5-S1 that may be all) and a disc, even a collapsed one
#: (35 mm x 3 mm). The canal is not required at a level: it can end or vanish on real
#: scans (a thecal sac ending high, severe stenosis), which the measurements report; it
#: is not a sign of foreign input.
LEVEL_FLOORS: dict[str, float] = {"vertebra_mm2": 300.0, "disc_mm2": 100.0}
#: Level box, mm: cranio-caudal half height, AP extent in front of / behind the disc centre
#: (more behind it, where the canal is), and the number of sagittal slices.
LEVEL_BOX_MM = {"half_cc": 20.0, "anterior": 25.0, "posterior": 35.0}
LEVEL_SLICES = 3
#: Midline slices used for the anatomical quantities of a study.
STUDY_MIDLINE_SLICES = 3
#: Disc runs along the cranio-caudal axis shorter than this are fragments, not discs.
MIN_DISC_RUN_MM = 3.0

_CLASSES = {"vertebra": 1, "disc": 2, "canal": 3}


def _thresholds(card: dict[str, Any]) -> dict[str, float]:
    block = card.get("ood") if isinstance(card, dict) else None
    if not isinstance(block, dict) or not isinstance(block.get("thresholds"), dict):
        name = card.get("name") if isinstance(card, dict) else None
        raise ValueError(f"model card {name!r} has no fitted 'ood' thresholds; "
                         "run benchmarks/ood_segmentation.py")
    out = {}
    for key in ("study", "level"):
        value = block["thresholds"].get(key)
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"model card ood threshold {key!r} must be a positive number, "
                             f"got {value!r}")
        out[key] = float(value)
    return out


def _canonical(volume: Volume, labels: np.ndarray, confidence: np.ndarray
               ) -> tuple[Orientation, np.ndarray, np.ndarray]:
    """Validate the inputs and turn labels and confidence to canonical sagittal slices."""
    array = np.asarray(getattr(volume, "array", None))
    affine = getattr(volume, "affine", None)
    if array.ndim != 3 or affine is None:
        raise ValueError(f"volume must be a 3-D Volume with an affine, got {type(volume)!r}")
    labels = np.asarray(labels)
    confidence = np.asarray(confidence)
    if labels.shape != array.shape:
        raise ValueError(f"labels shape {labels.shape} != volume shape {array.shape}")
    if confidence.shape != array.shape:
        raise ValueError(f"confidence shape {confidence.shape} != volume shape {array.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 3):
        raise ValueError(f"labels must be classes 0-3, got values {np.unique(labels)[:8].tolist()}")
    if not np.isfinite(confidence).all():
        raise ValueError("confidence contains NaN or infinite values")
    if confidence.size and (confidence.min() < 0 or confidence.max() > 1):
        raise ValueError(f"confidence must lie in [0, 1], got range "
                         f"{float(confidence.min()):.3g}..{float(confidence.max()):.3g}")
    orientation = Orientation.from_affine(np.asarray(affine))
    return (orientation, orientation.to_canonical(labels.astype(np.uint8)),
            orientation.to_canonical(confidence.astype(np.float32)))


def _uncertainty(labels: np.ndarray, confidence: np.ndarray) -> float:
    foreground = labels > 0
    if not foreground.any():
        return 1.0
    return float(np.mean(1.0 - confidence[foreground]))


def _shortfall(observed: float, expected: float) -> float:
    return float(max(0.0, 1.0 - observed / expected))


def _disc_count(disc: np.ndarray, row_mm: float) -> int:
    """Discs on one canonical slice: runs of disc rows (head->feet) of at least 3 mm."""
    rows = np.concatenate([[0], disc.any(axis=1).astype(np.int8), [0]])
    edges = np.diff(rows)
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return int(np.sum(lengths * row_mm >= MIN_DISC_RUN_MM))


Parts = tuple[float, dict[str, float], dict[str, float]]


def _score(parts: Parts) -> float:
    uncertainty, shortfalls, _ = parts
    return round(uncertainty + float(np.mean(list(shortfalls.values()))), 4)


def _result(parts: Parts, floors: dict[str, float], threshold: float, what: str
            ) -> dict[str, Any]:
    uncertainty, shortfalls, observed = parts
    score = _score(parts)
    flagged = bool(score > threshold)
    reason = None
    if flagged:
        parts = [f"mean uncertainty {uncertainty:.2f} on the predicted anatomy"]
        parts += [f"{name.replace('_mm2', '')} {observed[name]:.0f}"
                  f"{' mm2' if name.endswith('_mm2') else ''} below {floors[name]:.0f}"
                  for name, short in shortfalls.items() if short > 0]
        reason = (f"segmentation out of distribution {what}: score {score:.3f} > "
                  f"{threshold:.3f} ({'; '.join(parts)})")
    return {"flagged": flagged, "score": score, "threshold": threshold, "reason": reason}


def _midline(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` slices with the most disc + canal (the midline slab)."""
    richness = ((labels == 2) | (labels == 3)).sum(axis=(1, 2))
    return np.sort(np.argsort(-richness, kind="stable")[:count])


def _study_parts(volume: Volume, labels: np.ndarray, confidence: np.ndarray) -> Parts:
    orientation, labels, confidence = _canonical(volume, labels, confidence)
    pixel_mm2 = orientation.spacing[0] * orientation.spacing[1]
    mid = labels[_midline(labels, STUDY_MIDLINE_SLICES)]
    observed = {
        "vertebra_mm2": float((mid == 1).sum(axis=(1, 2)).mean() * pixel_mm2),
        "discs": float(max(_disc_count(s == 2, orientation.spacing[0]) for s in mid)),
        "canal_mm2": float((mid == 3).sum(axis=(1, 2)).mean() * pixel_mm2),
    }
    shortfalls = {k: _shortfall(observed[k], STUDY_FLOORS[k]) for k in STUDY_FLOORS}
    return _uncertainty(labels, confidence), shortfalls, observed


def study_score(volume: Volume, labels: np.ndarray, confidence: np.ndarray) -> float:
    """The study score alone (no threshold needed): what the thresholds are fitted on."""
    return _score(_study_parts(volume, labels, confidence))


def study_ood(volume: Volume, labels: np.ndarray, confidence: np.ndarray,
              card: dict[str, Any]) -> dict[str, Any]:
    """Per-study check of a segmented sagittal series against the card's study threshold.

    Returns {"flagged": bool, "score": float, "threshold": float, "reason": str | None}.
    """
    threshold = _thresholds(card)["study"]
    return _result(_study_parts(volume, labels, confidence), STUDY_FLOORS, threshold,
                   "for this series")


def level_box(volume: Volume, centre_lps: np.ndarray) -> tuple[slice, slice, slice]:
    """Canonical (slice, row, col) box around a disc centre: 3 slices, 40 x 60 mm in plane."""
    centre = np.asarray(centre_lps, dtype=np.float64)
    if centre.shape != (3,) or not np.isfinite(centre).all():
        raise ValueError(f"centre_lps must be 3 finite LPS coordinates, got {centre_lps!r}")
    orientation = Orientation.from_affine(np.asarray(volume.affine))
    shape = np.asarray(volume.array).shape
    index = np.asarray(volume.lps_to_index(centre), dtype=np.float64)
    # Same transposes and flips as Orientation.to_canonical, applied to one point.
    s, r, c = index
    rows, cols = shape[1], shape[2]
    if orientation.transpose:
        r, c = c, r
        rows, cols = cols, rows
    if orientation.flip_rows:
        r = rows - 1 - r
    if orientation.flip_cols:
        c = cols - 1 - c
    if not (-0.5 <= s <= shape[0] - 0.5 and -0.5 <= r <= rows - 0.5 and -0.5 <= c <= cols - 0.5):
        raise ValueError(f"centre_lps {centre.round(1).tolist()} lies outside the volume "
                         f"(index {np.round(index, 1).tolist()}, shape {list(shape)})")
    row_mm, col_mm = orientation.spacing
    s0 = int(np.clip(round(s) - LEVEL_SLICES // 2, 0, max(0, shape[0] - LEVEL_SLICES)))
    r0 = max(0, int(np.floor(r - LEVEL_BOX_MM["half_cc"] / row_mm)))
    r1 = min(rows, int(np.ceil(r + LEVEL_BOX_MM["half_cc"] / row_mm)) + 1)
    c0 = max(0, int(np.floor(c - LEVEL_BOX_MM["anterior"] / col_mm)))
    c1 = min(cols, int(np.ceil(c + LEVEL_BOX_MM["posterior"] / col_mm)) + 1)
    return slice(s0, s0 + LEVEL_SLICES), slice(r0, r1), slice(c0, c1)


def _level_parts(volume: Volume, labels: np.ndarray, confidence: np.ndarray,
                 centre_lps: np.ndarray) -> Parts:
    orientation, labels, confidence = _canonical(volume, labels, confidence)
    box = level_box(volume, centre_lps)
    labels, confidence = labels[box], confidence[box]
    pixel_mm2 = orientation.spacing[0] * orientation.spacing[1]
    observed = {f"{name}_mm2": float((labels == value).sum(axis=(1, 2)).mean() * pixel_mm2)
                for name, value in _CLASSES.items()}
    shortfalls = {k: _shortfall(observed[k], LEVEL_FLOORS[k]) for k in LEVEL_FLOORS}
    return _uncertainty(labels, confidence), shortfalls, observed


def level_score(volume: Volume, labels: np.ndarray, confidence: np.ndarray,
                centre_lps: np.ndarray) -> float:
    """The level score alone (no threshold needed): what the thresholds are fitted on."""
    return _score(_level_parts(volume, labels, confidence, centre_lps))


def level_ood(volume: Volume, labels: np.ndarray, confidence: np.ndarray,
              centre_lps: np.ndarray, card: dict[str, Any]) -> dict[str, Any]:
    """Per-level check in the box around one disc centre (patient LPS, mm).

    The box spans 40 mm cranio-caudally and 60 mm antero-posteriorly (25 mm in front of the
    centre, 35 mm behind it, so the canal is inside) on the 3 sagittal slices nearest the
    centre. Same keys as :func:`study_ood`, against the card's level threshold.
    """
    threshold = _thresholds(card)["level"]
    return _result(_level_parts(volume, labels, confidence, centre_lps), LEVEL_FLOORS,
                   threshold, "at this level")
