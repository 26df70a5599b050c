"""Level-driven regions of interest, resampled at a fixed physical size.

Every crop is defined in patient space from a level's geometry (disc centre, cranial and
posterior axes, canal centre) and sampled from the source grid through its affine, so a crop
covers the same millimetres whatever the scanner's pixel size, slice gap or axial angulation.
That is what lets one network see sagittal and angled-axial data from any site alike.

Crop axes (``Crop.array`` is ``[k, v, u]``):
- canal (sagittal T2): u = posterior, v = caudal, k = patient left, centred on the canal;
- foramen (sagittal T1): u = posterior, v = caudal, k = lateral (away from the midline),
  centred on the expected foramen;
- subarticular (axial T2): u = lateral, v = posterior, k = cranial, centred on the lateral
  recess. The right side is mirrored so left and right crops look alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

from lumbar_common.vocabulary import Side
from models.study import LevelGeometry, StudyAnatomy, Volume

#: crop geometry: in-plane field (mm), pixels, slab offsets (mm)
CANAL_FIELD_MM, CANAL_PX = 48.0, 32
CANAL_OFFSETS_MM: tuple[float, ...] = (-4.0, 0.0, 4.0)
FORAMEN_FIELD_MM, FORAMEN_PX = 40.0, 32
#: lateral distance of the foramen from the canal centre (canal half-width + pedicle);
#: the slab covers the span seen in adults so the network can find the foramen itself
FORAMEN_LATERAL_MM = 18.0
FORAMEN_OFFSETS_MM: tuple[float, ...] = (-8.0, -4.0, 0.0, 4.0, 8.0)
#: the foramen sits a little anterior to the canal centre, at the posterior disc margin,
#: and the exiting root in its upper part, above the disc plane
FORAMEN_ANTERIOR_MM = 4.0
FORAMEN_CRANIAL_MM = 7.0
AXIAL_FIELD_MM, AXIAL_PX = 32.0, 32
#: lateral recess: lateral to the canal centre and toward its anterior wall
SUBARTICULAR_LATERAL_MM = 8.0
SUBARTICULAR_ANTERIOR_MM = 5.0
AXIAL_OFFSETS_MM: tuple[float, ...] = (-3.0, 0.0, 3.0)
#: an axial plane farther than this from the disc centre cannot show the disc level
AXIAL_MAX_DISTANCE_MM = 8.0


@dataclass(frozen=True)
class Crop:
    array: np.ndarray  # float32 [k, v, u], normalised intensities
    centre_lps: np.ndarray
    #: LPS unit vectors of the u, v, k axes
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    field_mm: float
    series_instance_uid: str
    #: source slice nearest the crop centre (for the finding's roi)
    slice_index: int
    #: corners of the centre plane in LPS (u-,v-), (u+,v-), (u+,v+), (u-,v+)
    corners_lps: np.ndarray
    #: fraction of crop samples that fell inside the source volume
    coverage: float


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    if n < 1e-9:
        raise ValueError(f"zero-length direction {v}")
    return v / n


def left_axis(level: LevelGeometry) -> np.ndarray:
    """Patient-left unit vector at a level: posterior x cranial (LPS is right-handed)."""
    return _unit(np.cross(level.posterior_lps, level.cranial_lps))


#: recent (array, scale) pairs: every crop of a series shares one scale, computed once
_SCALES: list[tuple[np.ndarray, float]] = []


def normalise_intensity(volume: Volume) -> float:
    """A robust intensity scale of a series (99.5th percentile), so crops are ~0..1."""
    arr = volume.array
    for cached, scale in _SCALES:
        if cached is arr:
            return scale
    step = max(1, arr.size // 200_000)
    scale = float(np.percentile(arr.reshape(-1)[::step], 99.5))
    scale = scale if scale > 0 else 1.0
    _SCALES.insert(0, (arr, scale))
    del _SCALES[8:]
    return scale


def sample_crop(volume: Volume, centre: np.ndarray, u: np.ndarray, v: np.ndarray,
                k: np.ndarray, field_mm: float, px: int, offsets_mm: tuple[float, ...],
                scale: float | None = None) -> Crop:
    """Trilinear resampling of a square field around ``centre``; outside the volume is 0."""
    u, v, k = _unit(u), _unit(v), _unit(k)
    centre = np.asarray(centre, dtype=np.float64)
    step = field_mm / px
    grid = (np.arange(px) - (px - 1) / 2) * step
    gv, gu = np.meshgrid(grid, grid, indexing="ij")
    planes = [centre + off * k + gu[..., None] * u + gv[..., None] * v for off in offsets_mm]
    pts = np.stack(planes)  # [k, v, u, 3]
    idx = volume.lps_to_index(pts)
    inside = np.all((idx > -0.5) & (idx < np.asarray(volume.array.shape) - 0.5), axis=-1)
    coords = np.moveaxis(idx, -1, 0)
    data = map_coordinates(volume.array, coords, output=np.float32, order=1, mode="constant",
                           cval=0.0, prefilter=False)
    data = data / (scale if scale is not None else normalise_intensity(volume))
    half = field_mm / 2
    corners = np.stack([centre + a * half * u + b * half * v
                        for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    s = int(np.clip(np.rint(volume.lps_to_index(centre)[0]), 0, volume.array.shape[0] - 1))
    return Crop(data.astype(np.float32), centre, (u, v, k), field_mm,
                volume.series_instance_uid, s, corners, float(inside.mean()))


def _sagittal(anatomy: StudyAnatomy) -> Volume | None:
    return anatomy.volumes.get("sag_t2") or anatomy.volumes.get("sag_stir")


def canal_crop(anatomy: StudyAnatomy, level: LevelGeometry) -> Crop | None:
    vol = _sagittal(anatomy)
    if vol is None:
        return None
    return sample_crop(vol, level.canal_centre_lps, level.posterior_lps, -level.cranial_lps,
                       left_axis(level), CANAL_FIELD_MM, CANAL_PX, CANAL_OFFSETS_MM)


def foramen_centre(level: LevelGeometry, side: Side) -> np.ndarray:
    """Expected foramen position from the level geometry (refined by the slab, not here)."""
    sign = 1.0 if side == "left" else -1.0
    return (np.asarray(level.canal_centre_lps) + sign * FORAMEN_LATERAL_MM * left_axis(level)
            - FORAMEN_ANTERIOR_MM * np.asarray(level.posterior_lps)
            + FORAMEN_CRANIAL_MM * np.asarray(level.cranial_lps))


def foramen_crop(anatomy: StudyAnatomy, level: LevelGeometry, side: Side,
                 role: str = "sag_t1") -> Crop | None:
    vol = anatomy.volumes.get(role)
    if vol is None:
        return None
    lateral = left_axis(level) * (1.0 if side == "left" else -1.0)
    return sample_crop(vol, foramen_centre(level, side), level.posterior_lps,
                       -level.cranial_lps, lateral, FORAMEN_FIELD_MM, FORAMEN_PX,
                       FORAMEN_OFFSETS_MM)


def nearest_axial(anatomy: StudyAnatomy, point: np.ndarray,
                  normal: np.ndarray) -> tuple[Volume, float] | None:
    """The axial stack whose nearest slice plane passes closest to ``point``.

    Chosen by patient-space distance (slice numbers mean nothing across angled blocks); among
    stacks at similar distance the one most parallel to the disc wins. Returns the stack and
    the distance in mm, or None when no axial stack covers the point.
    """
    stacks = [v for v in ([anatomy.volumes.get("ax_t2")] + list(anatomy.axial_stacks)) if v]
    best: tuple[float, Volume, float] | None = None
    for vol in stacks:
        idx = vol.lps_to_index(point)
        n_slices = vol.array.shape[0]
        if not (-0.5 <= idx[1] <= vol.array.shape[1] - 0.5
                and -0.5 <= idx[2] <= vol.array.shape[2] - 0.5):
            continue
        s = int(np.clip(np.rint(idx[0]), 0, n_slices - 1))
        slice_normal = _unit(vol.affine[:3, 0])
        plane_point = vol.index_to_lps(np.array([s, idx[1], idx[2]]))
        dist = abs(float(np.dot(point - plane_point, slice_normal)))
        tilt = 1.0 - abs(float(np.dot(slice_normal, _unit(normal))))
        cost = dist + 20.0 * tilt
        if best is None or cost < best[0]:
            best = (cost, vol, dist)
    if best is None or best[2] > AXIAL_MAX_DISTANCE_MM:
        return None
    return best[1], best[2]


def subarticular_centre(level: LevelGeometry, side: Side) -> np.ndarray:
    sign = 1.0 if side == "left" else -1.0
    return (np.asarray(level.canal_centre_lps) + sign * SUBARTICULAR_LATERAL_MM * left_axis(level)
            - SUBARTICULAR_ANTERIOR_MM * np.asarray(level.posterior_lps))


def subarticular_crop(anatomy: StudyAnatomy, level: LevelGeometry, side: Side) -> Crop | None:
    found = nearest_axial(anatomy, np.asarray(level.disc_centre_lps), level.cranial_lps)
    if found is None:
        return None
    vol, _dist = found
    lateral = left_axis(level) * (1.0 if side == "left" else -1.0)
    return sample_crop(vol, subarticular_centre(level, side), lateral, level.posterior_lps,
                       level.cranial_lps, AXIAL_FIELD_MM, AXIAL_PX, AXIAL_OFFSETS_MM)
