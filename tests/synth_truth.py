"""Reference masks of synthetic studies, matched to assembled volumes by position.

Stands in for the segmentation network where a test needs exact anatomy: the generator's
SPIDER labels are mapped onto the slices the volume assembly kept (a re-acquired slice has
a new SOP instance UID, so matching is by position, not by UID).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models.levels import semantic_from_labels
from models.study import Volume


def truth(study: Path) -> dict:
    return json.loads((study / "truth.json").read_text())


def series_files(study: Path, role: str) -> list[Path]:
    return [study / f for f in truth(study)["series"][role]["files"]]


def labels_for(study: Path, volume: Volume) -> np.ndarray:
    """SPIDER labels in the grid of ``volume`` (one of the study's sagittal series)."""
    recs = [r for r in truth(study)["series"].values()
            if r["series_instance_uid"] == volume.series_instance_uid and r.get("label_file")]
    if not recs:
        raise ValueError(f"no labels for series {volume.series_instance_uid}")
    with np.load(study / recs[0]["label_file"]) as npz:
        labels, affine = npz["labels"], npz["affine"]
    starts = volume.index_to_lps(np.array([[k, 0.0, 0.0] for k in range(volume.array.shape[0])]))
    inv = np.linalg.inv(affine)
    idx = starts @ inv[:3, :3].T + inv[:3, 3]
    if not np.allclose(idx[:, 1:], 0.0, atol=0.05) or not np.allclose(idx[:, 0], np.rint(idx[:, 0]),
                                                                       atol=0.05):
        raise ValueError("volume slices do not lie on the label grid")
    return labels[np.rint(idx[:, 0]).astype(int)]


class TruthSegmenter:
    """Segmenter interface (``card``, ``segment``) answering with the reference mask."""

    def __init__(self, study: Path) -> None:
        self.study = study
        self.card = {"name": "synthetic-reference-labels", "version": "1", "sha256": None}

    def segment(self, volume: Volume) -> np.ndarray:
        return semantic_from_labels(labels_for(self.study, volume))
