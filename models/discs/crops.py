"""Disc-centred crops on a fixed millimetre grid aligned with the disc plane.

Every disc is seen through the same window whatever the scanner's pixel size, field of view
or lordosis: rows run along the spine's long axis (cranial at row 0) and columns along the
posterior direction in the mid-sagittal plane (anterior at column 0), both from the level's
:class:`~models.study.LevelGeometry` found by the node's own segmentation and labelling.
The window is taller than a disc (the adjacent endplates and marrow carry Modic changes and
endplate defects) and reaches behind the disc into the canal (herniation, bulging, slip).

Only the slice nearest the disc centre is sampled: the grader reads mid-sagittal anatomy,
and a volume with one or a few slices must work the same way as a full series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from models.study import LevelGeometry, Volume

#: crop size in pixels (rows along the spine, columns antero-posterior)
CROP_ROWS, CROP_COLS = 48, 64
#: millimetres per crop pixel (isotropic)
CROP_MM = 1.0
#: the window's centre lies this far behind the disc centre, so the canal is inside it
POSTERIOR_SHIFT_MM = 6.0
#: a crop with more of its area outside the image than this is not assessable
MAX_OUTSIDE_FRACTION = 0.3


@dataclass(frozen=True)
class Jitter:
    """Small changes of the window used to augment training crops (identity by default)."""

    shift_cranial_mm: float = 0.0
    shift_posterior_mm: float = 0.0
    angle_deg: float = 0.0
    scale: float = 1.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Jitter:
        """A random window change of the size the labelling's own error has on real slices."""
        return cls(float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2)),
                   float(rng.uniform(-7, 7)), float(rng.uniform(0.92, 1.08)))


@dataclass(frozen=True)
class DiscCrop:
    """A normalised crop and where it came from."""

    image: np.ndarray  # float32 [CROP_ROWS, CROP_COLS], roughly 0..1
    slice_index: int
    outside_fraction: float
    #: LPS of the crop's pixel (0, 0) and the LPS steps of one row / one column
    origin_lps: np.ndarray
    row_step_lps: np.ndarray
    col_step_lps: np.ndarray


def _unit(v: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(v))
    if v.shape != (3,) or not np.isfinite(n) or n < 1e-6:
        raise ValueError(f"{name} must be a finite non-zero 3-vector, got {v.tolist()}")
    return v / n


def normalise(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Scale the in-image pixels' 1st..99th percentile to 0..1 (outside stays 0).

    Grey values of the PNGs are min-max scaled per image and differ between scanners, so
    only contrast inside the window is comparable (disc against marrow and fluid)."""
    out = np.zeros(values.shape, np.float32)
    if inside.sum() < 16:
        return out
    lo, hi = np.percentile(values[inside], [1.0, 99.0])
    scale = max(float(hi - lo), 1e-6)
    out[inside] = np.clip((values[inside] - lo) / scale, -0.5, 1.5)
    return out


def disc_crop(volume: Volume, geometry: LevelGeometry, jitter: Jitter | None = None,
              rows: int = CROP_ROWS, cols: int = CROP_COLS, mm: float = CROP_MM) -> DiscCrop:
    """Sample the slice nearest ``geometry.disc_centre_lps`` on the disc-aligned grid.

    Row ``r``, column ``c`` of the crop is the point
    ``centre + (c - (cols-1)/2) * mm * posterior - (r - (rows-1)/2) * mm * cranial``
    (rotated and scaled by ``jitter``), with ``centre`` the disc centre moved
    ``POSTERIOR_SHIFT_MM`` posteriorly; bilinear interpolation, zero outside the image.
    """
    if rows < 4 or cols < 4 or not np.isfinite(mm) or mm <= 0:
        raise ValueError(f"crop must be at least 4x4 px of positive size, got {rows}x{cols} @ {mm}")
    jitter = jitter or Jitter()
    centre = np.asarray(geometry.disc_centre_lps, dtype=np.float64)
    if centre.shape != (3,) or not np.all(np.isfinite(centre)):
        raise ValueError(f"disc_centre_lps must be a finite 3-vector, got {centre.tolist()}")
    cranial = _unit(geometry.cranial_lps, "cranial_lps")
    posterior = _unit(geometry.posterior_lps, "posterior_lps")
    posterior = _unit(posterior - cranial * float(posterior @ cranial), "posterior_lps")
    a = np.deg2rad(jitter.angle_deg)
    cranial, posterior = (np.cos(a) * cranial + np.sin(a) * posterior,
                          np.cos(a) * posterior - np.sin(a) * cranial)
    step = mm * jitter.scale
    centre = (centre + (POSTERIOR_SHIFT_MM + jitter.shift_posterior_mm) * posterior
              + jitter.shift_cranial_mm * cranial)
    row_step, col_step = -step * cranial, step * posterior
    origin = centre - (rows - 1) / 2 * row_step - (cols - 1) / 2 * col_step
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    points = origin + rr[..., None] * row_step + cc[..., None] * col_step
    index = volume.lps_to_index(points)
    k = int(np.clip(np.rint(volume.lps_to_index(geometry.disc_centre_lps)[0]), 0,
                    volume.array.shape[0] - 1))
    image = np.asarray(volume.array[k], dtype=np.float32)
    r, c = index[..., 1], index[..., 2]
    inside = (r >= 0) & (r <= image.shape[0] - 1) & (c >= 0) & (c <= image.shape[1] - 1)
    values = ndimage.map_coordinates(image, [r, c], order=1, mode="constant", cval=0.0)
    return DiscCrop(normalise(values, inside), k, float(1.0 - inside.mean()), origin,
                    row_step, col_step)
