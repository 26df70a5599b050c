"""In-memory types passed between pipeline stages.

Stages exchange these instead of raw arrays so that geometry travels with pixels: a crop,
a measurement or a SEG frame is always tied to the series and slice it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Volume:
    """One series resampled nowhere: pixels as acquired, slices sorted along the normal.

    ``affine`` maps ``(slice, row, col, 1)`` to patient LPS millimetres.
    """

    role: str
    series_instance_uid: str
    array: np.ndarray
    affine: np.ndarray
    sop_instance_uids: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"volume array must be 3-D [slice,row,col], got {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if len(self.sop_instance_uids) != self.array.shape[0]:
            raise ValueError(
                f"{len(self.sop_instance_uids)} SOP instance UIDs for {self.array.shape[0]} slices"
            )

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along (slice, row, col)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def index_to_lps(self, index: np.ndarray) -> np.ndarray:
        """(…, 3) voxel indices (slice, row, col) to (…, 3) LPS points."""
        idx = np.asarray(index, dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_index(self, points: np.ndarray) -> np.ndarray:
        """(…, 3) LPS points to fractional (slice, row, col) indices."""
        pts = np.asarray(points, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]


@dataclass(frozen=True)
class LevelGeometry:
    """Where one disc level sits in patient space, found from the segmentation."""

    level: str
    disc_centre_lps: np.ndarray
    #: unit vector along the spine's long axis at this disc, pointing cranially
    cranial_lps: np.ndarray
    #: unit vector in the mid-sagittal plane, perpendicular to ``cranial_lps``, pointing posteriorly
    posterior_lps: np.ndarray
    #: centre of the spinal canal at the disc level
    canal_centre_lps: np.ndarray
    warnings: tuple[str, ...] = ()


@dataclass
class StudyAnatomy:
    """Everything the graders and result builders need about one study."""

    study_instance_uid: str
    volumes: dict[str, Volume]
    #: further axial stacks when the axial T2 was acquired as several angled blocks
    axial_stacks: list[Volume] = field(default_factory=list)
    #: instance labels (SPIDER values) in the grid of ``volumes["sag_t2"]`` (or sag_stir)
    labels: np.ndarray | None = None
    labels_role: str = "sag_t2"
    levels: list[LevelGeometry] = field(default_factory=list)
    #: level -> list of measurement dicts as in findings.json
    measurements: dict[str, list[dict]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
