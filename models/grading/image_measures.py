"""Measurements the explainable grader reads off labels and crops.

Kept apart from the thresholds so each number can be tested against synthetic ground truth
(truth.json gives the canal AP diameter per disc) independently of how it is graded.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import label as connected
from scipy.ndimage import map_coordinates

from lumbar_common.vocabulary import SPIDER_CANAL
from models.grading.roi import Crop, left_axis
from models.study import LevelGeometry, StudyAnatomy

#: sampling step along measurement lines (mm)
STEP_MM = 0.25


def _label_volume(anatomy: StudyAnatomy):
    if anatomy.labels is None:
        return None
    vol = anatomy.volumes.get(anatomy.labels_role)
    if vol is None or vol.array.shape != anatomy.labels.shape:
        return None
    return vol, anatomy.labels


def _sample_labels(labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return map_coordinates(labels, np.moveaxis(idx, -1, 0), order=0, mode="constant", cval=0)


def canal_ap_from_labels(anatomy: StudyAnatomy, level: LevelGeometry,
                         reach_mm: float = 25.0) -> dict | None:
    """Canal AP diameter on the disc's mid-sagittal line, from the canal label.

    Samples along the posterior axis through the canal centre and measures the canal run
    that contains (or is nearest to) the centre, in mm; the run's ends are the two points.
    """
    found = _label_volume(anatomy)
    if found is None:
        return None
    vol, labels = found
    t = np.arange(-reach_mm, reach_mm + STEP_MM / 2, STEP_MM)
    centre = np.asarray(level.canal_centre_lps, dtype=np.float64)
    post = np.asarray(level.posterior_lps, dtype=np.float64)
    pts = centre + t[:, None] * post
    inside = _sample_labels(labels, vol.lps_to_index(pts)) == SPIDER_CANAL
    if not inside.any():
        return None
    runs, n = connected(inside)
    centre_i = len(t) // 2
    best = min(range(1, n + 1), key=lambda r: np.min(np.abs(np.flatnonzero(runs == r) - centre_i)))
    where = np.flatnonzero(runs == best)
    a, b = pts[where[0]] - STEP_MM / 2 * post, pts[where[-1]] + STEP_MM / 2 * post
    s = int(np.clip(np.rint(vol.lps_to_index(centre)[0]), 0, vol.array.shape[0] - 1))
    return {"name": "canal_ap_diameter", "value": round(float(len(where) * STEP_MM), 2),
            "unit": "mm", "series_instance_uid": vol.series_instance_uid, "slice": s,
            "points_lps": [a.round(2).tolist(), b.round(2).tolist()]}


def canal_area_from_labels(anatomy: StudyAnatomy, level: LevelGeometry,
                           field_mm: float = 40.0, step_mm: float = 0.5) -> dict | None:
    """Canal cross-section in the disc plane from the canal label (nearest-neighbour).

    Only as fine as the sagittal slice gap laterally, so it is reported beside the AP diameter
    rather than used to grade; None when the canal reaches the edge of the sagittal slab
    (the area would be cut short).
    """
    found = _label_volume(anatomy)
    if found is None:
        return None
    vol, labels = found
    g = np.arange(-field_mm / 2, field_mm / 2, step_mm) + step_mm / 2
    gl, gp = np.meshgrid(g, g, indexing="ij")
    pts = (np.asarray(level.canal_centre_lps) + gl[..., None] * left_axis(level)
           + gp[..., None] * np.asarray(level.posterior_lps))
    idx = vol.lps_to_index(pts)
    mask = _sample_labels(labels, idx) == SPIDER_CANAL
    if not mask.any():
        return None
    comps, _ = connected(mask)
    c = len(g) // 2
    centre_comp = comps[c - 2:c + 2, c - 2:c + 2].max()
    if centre_comp == 0:
        return None
    mask = comps == centre_comp
    slab = idx[..., 0]
    if slab[mask].min() < 0.5 or slab[mask].max() > vol.array.shape[0] - 1.5:
        return None
    s = int(np.clip(np.rint(vol.lps_to_index(level.canal_centre_lps)[0]), 0,
                    vol.array.shape[0] - 1))
    return {"name": "canal_area", "value": round(float(mask.sum() * step_mm**2), 1),
            "unit": "mm2", "series_instance_uid": vol.series_instance_uid, "slice": s}


#: T1 intensity (fraction of the series' 99.5th percentile) above which a pixel reads as fat
FAT_LEVEL = 0.45
#: the foraminal window: an upright ellipse (AP x cranio-caudal half-axes, mm), the size of
#: an adult lumbar foramen's upper (root-bearing) part
FORAMEN_WINDOW_MM = (6.5, 9.5)
#: T2 intensity above which a pixel reads as CSF / fat / root (not bone, ligament, disc)
FLUID_LEVEL = 0.35
#: radius (mm) of the lateral-recess window on the axial T2
RECESS_RADIUS_MM = 4.0


def recess_patency(crop: Crop) -> float:
    """Fraction of the lateral recess window that is still fluid/fat-bright on the axial T2.

    The window is a circle at the expected recess (crop centre) on the axial slice nearest
    the disc plane. Facet and ligamentum flavum overgrowth fill the recess with T2-dark
    tissue, so the fraction falls from ~0.3-0.8 (open, CSF and the traversing root around
    fat) towards 0 (recess closed).
    """
    px = crop.array.shape[-1]
    win = _ellipse(crop.field_mm, px, (0.0, 0.0), (RECESS_RADIUS_MM, RECESS_RADIUS_MM))
    mid = crop.array.shape[0] // 2
    return float((crop.array[mid][win] > FLUID_LEVEL).mean())


def _ellipse(field_mm: float, px: int, centre_uv: tuple[float, float],
             half_axes: tuple[float, float]) -> np.ndarray:
    step = field_mm / px
    g = (np.arange(px) - (px - 1) / 2) * step
    gv, gu = np.meshgrid(g, g, indexing="ij")
    return ((gu - centre_uv[0]) / half_axes[0]) ** 2 + ((gv - centre_uv[1]) / half_axes[1]) ** 2 < 1


def foraminal_fat_fraction(crop: Crop) -> float:
    """Fraction of the foraminal window still filled with T1-bright perineural fat.

    The window (upright ellipse, in-plane u = posterior, v = caudal) sits at the crop centre,
    the expected foramen; the best of the three parasagittal slices nearest the expected
    lateral position counts, so a foramen a few mm more medial or lateral than expected is
    still measured where it is open. 0 means the fat is obliterated all round.
    """
    px = crop.array.shape[-1]
    win = _ellipse(crop.field_mm, px, (0.0, 0.0), FORAMEN_WINDOW_MM)
    fractions = (crop.array[:, win] > FAT_LEVEL).mean(axis=1)
    mid = crop.array.shape[0] // 2
    return float(fractions[max(0, mid - 1):mid + 2].max())
