"""Per-level measurements on the sagittal series: canal AP diameter, disc and body heights,
anterolisthesis.

Every measurement is a caliper between two patient-space points on one acquired slice, so a
radiologist can find it on the image and check it. Edges are located where the linearly
interpolated mask crosses one half along a ray, which keeps the error well below a pixel
instead of the up-to-one-pixel error of counting voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lumbar_common.vocabulary import SPIDER_CANAL
from models.levels import LevelLabelling
from models.study import LevelGeometry, Volume

#: sampling step along a caliper ray (mm)
STEP_MM = 0.05
#: anterior/posterior disc heights are reported at this fraction of the half depth from the
#: disc centre, from endplate lines fitted over the central part (rims are rounded)
DISC_HEIGHT_AT = 0.85
#: the endplate lines are fitted between these fractions of the half depth
DISC_FIT_RANGE = 0.7
#: the endplate corners for listhesis are taken this far (mm) beyond the disc surface
CORNER_OFFSET_MM = 2.0


def _intervals(mask2d: np.ndarray, volume: Volume, slice_index: int, origin: np.ndarray,
               direction: np.ndarray, t0: float, t1: float) -> list[tuple[float, float]]:
    """Runs along ``origin + t * direction`` (t in mm) where the mask is inside (≥ 0.5)."""
    t = np.arange(t0, t1 + STEP_MM / 2, STEP_MM)
    pts = origin[None, :] + t[:, None] * direction[None, :]
    idx = volume.lps_to_index(pts)
    values = ndimage.map_coordinates(mask2d.astype(np.float32), [idx[:, 1], idx[:, 2]], order=1,
                                     mode="constant", cval=0.0)
    inside = values >= 0.5
    runs: list[tuple[float, float]] = []
    start: float | None = None
    for k, flag in enumerate(inside):
        if flag and start is None:
            start = _edge(t, values, k - 1, k) if k > 0 else float(t[0])
        elif not flag and start is not None:
            runs.append((start, _edge(t, values, k - 1, k)))
            start = None
    if start is not None:
        runs.append((start, float(t[-1])))
    return runs


def _edge(t: np.ndarray, values: np.ndarray, a: int, b: int) -> float:
    """Where the interpolated profile crosses 0.5 between samples a and b."""
    va, vb = float(values[a]), float(values[b])
    if abs(vb - va) < 1e-9:
        return float(t[b])
    return float(t[a] + (0.5 - va) / (vb - va) * (t[b] - t[a]))


def _run_at(runs: list[tuple[float, float]], t: float) -> tuple[float, float] | None:
    """The run containing t, else the nearest one."""
    if not runs:
        return None
    for run in runs:
        if run[0] <= t <= run[1]:
            return run
    return min(runs, key=lambda r: min(abs(r[0] - t), abs(r[1] - t)))


class _Caliper:
    """Rays on one slice of one volume, each returning a measurement dict."""

    def __init__(self, volume: Volume, slice_index: int) -> None:
        self.volume = volume
        self.slice = slice_index

    def on_slice(self, point: np.ndarray) -> np.ndarray:
        idx = self.volume.lps_to_index(point)
        idx[0] = self.slice
        return self.volume.index_to_lps(idx)

    def runs(self, mask: np.ndarray, origin: np.ndarray, direction: np.ndarray, t0: float,
             t1: float) -> list[tuple[float, float]]:
        return _intervals(mask[self.slice], self.volume, self.slice, origin, direction, t0, t1)

    def record(self, name: str, origin: np.ndarray, direction: np.ndarray,
               run: tuple[float, float], **extra: object) -> dict:
        a = origin + run[0] * direction
        b = origin + run[1] * direction
        return {"name": name, "value": round(float(run[1] - run[0]), 2), "unit": "mm",
                "series_instance_uid": self.volume.series_instance_uid, "slice": self.slice,
                "sop_instance_uid": self.volume.sop_instance_uids[self.slice],
                "points_lps": [np.round(a, 3).tolist(), np.round(b, 3).tolist()], **extra}


def _canal_ap(volume: Volume, canal: np.ndarray, geom: LevelGeometry) -> dict | None:
    """Canal AP diameter at the disc, at the canal's midline.

    Sagittal slices are 3-4 mm apart, so the nearest slice may cut the oval sac off its
    midline and under-measure. The AP diameter is taken on up to three slices around the
    canal centre and the largest diameter of the parabola through their squares (an
    elliptical cross-section) is reported, on the slice nearest that maximum.
    """
    n = volume.array.shape[0]
    mid = int(np.clip(np.rint(volume.lps_to_index(geom.canal_centre_lps)[0]), 0, n - 1))
    canal = canal.copy()
    for s in range(max(mid - 1, 0), min(mid + 2, n)):  # specks of other classes inside the sac
        canal[s] = ndimage.binary_fill_holes(canal[s])
    found: list[tuple[float, int, tuple[float, float], np.ndarray]] = []
    for s in range(max(mid - 1, 0), min(mid + 2, n)):
        cal = _Caliper(volume, s)
        origin = cal.on_slice(geom.disc_centre_lps)
        runs = [r for r in cal.runs(canal, origin, geom.posterior_lps, 0.0, 80.0) if r[1] > r[0]]
        if runs:
            x = float(volume.lps_to_index(origin)[0])
            found.append((x, s, runs[0], origin))
    if not found:
        return None
    x, s, run, origin = max(found, key=lambda f: f[2][1] - f[2][0])
    value = run[1] - run[0]
    if len(found) == 3:
        xs = np.array([f[0] for f in found])
        sq = np.array([(f[2][1] - f[2][0]) ** 2 for f in found])
        c2, c1, c0 = np.polyfit(xs, sq, 2)
        if c2 < 0:
            x_top = -c1 / (2 * c2)
            if xs.min() <= x_top <= xs.max():
                value = float(np.sqrt(max(c0 - c1 * c1 / (4 * c2), value ** 2)))
                x, s, run, origin = min(found, key=lambda f: abs(f[0] - x_top))
    cal = _Caliper(volume, s)
    mid_t = 0.5 * (run[0] + run[1])
    return cal.record("canal_ap_diameter", origin, geom.posterior_lps,
                      (mid_t - value / 2, mid_t + value / 2))


def _fit_surfaces(cal: _Caliper, mask: np.ndarray, centre: np.ndarray, cranial: np.ndarray,
                  posterior: np.ndarray, mid: float, half: float, at: float = 0.0) -> (
        tuple[np.ndarray, np.ndarray] | None):
    """Parabolas t(v) of the lower and upper surface of a structure across its central part.

    Endplates are slightly concave, so a straight line through the central samples would
    sit inside the rims; a parabola follows the dip and its chord between the rims is the
    plane a reader draws from rim to rim.
    """
    vs, lows, highs = [], [], []
    for v in mid + half * np.linspace(-DISC_FIT_RANGE, DISC_FIT_RANGE, 15):
        run = _run_at(cal.runs(mask, centre + v * posterior, cranial, at - 40.0, at + 40.0), at)
        if run is not None and run[0] < at < run[1]:
            vs.append(v)
            lows.append(run[0])
            highs.append(run[1])
    if len(vs) < 7:
        return None
    return np.polyfit(vs, lows, 2), np.polyfit(vs, highs, 2)


def _chord(fit: np.ndarray, v: float, mid: float, half: float) -> float:
    """Value at v of the straight line through the parabola's points at the two rims."""
    a, b = float(np.polyval(fit, mid - half)), float(np.polyval(fit, mid + half))
    return a + (b - a) * (v - (mid - half)) / (2 * half)


def _endplate_span(cal: _Caliper, bodies: list[np.ndarray], centre: np.ndarray,
                   cranial: np.ndarray, posterior: np.ndarray,
                   fits: tuple[np.ndarray, np.ndarray], mid: float,
                   half: float) -> tuple[float, float] | None:
    """AP extent of the two endplates next to the disc (mean of the upper and lower body).

    The disc's own extent includes any bulge, which would shift the anterior and posterior
    measuring points; the bony endplate rims do not move with disc disease. Each body is
    crossed 6 mm inside it, clear of rim osteophytes, parallel to its endplate (a wedged disc
    tilts the two apart).
    """
    spans = []
    for mask, fit, offset in zip(bodies, (fits[1], fits[0]), (6.0, -6.0), strict=True):
        t_a, t_p = _chord(fit, mid - half, mid, half), _chord(fit, mid + half, mid, half)
        slope = (t_p - t_a) / (2 * half)
        direction = posterior + slope * cranial
        scale = float(np.linalg.norm(direction))
        origin = centre + (_chord(fit, 0.0, mid, half) + offset) * cranial
        run = _run_at(cal.runs(mask, origin, direction / scale, -60.0, 60.0), 0.0)
        if run is not None and run[0] < 0.0 < run[1]:
            spans.append((run[0] / scale, run[1] / scale))  # back to v along ``posterior``
    if not spans:
        return None
    return float(np.mean([r[0] for r in spans])), float(np.mean([r[1] for r in spans]))


def _disc_heights(cal: _Caliper, mask: np.ndarray, bodies: list[np.ndarray],
                  centre: np.ndarray, cranial: np.ndarray, posterior: np.ndarray,
                  ap: tuple[float, float]) -> tuple[list[dict], list[str]]:
    """Anterior and posterior disc heights between the endplate chords.

    Read at 85 % of the endplates' half depth from the centre, which avoids the rounded
    vertebral rims where the bare mask over-measures.
    """
    mid, half = 0.5 * (ap[0] + ap[1]), 0.5 * (ap[1] - ap[0])
    fits = _fit_surfaces(cal, mask, centre, cranial, posterior, mid, half)
    if fits is None:
        return [], ["disc heights: too few endplate samples on the mid-sagittal slice"]
    span = _endplate_span(cal, bodies, centre, cranial, posterior, fits, mid, half) if len(
        bodies) == 2 else None
    if span is not None:
        mid, half = 0.5 * (span[0] + span[1]), 0.5 * (span[1] - span[0])
        fits = _fit_surfaces(cal, mask, centre, cranial, posterior, mid, half) or fits
    lo_fit, hi_fit = fits
    records = []
    for name, v in (("disc_height_anterior", mid - DISC_HEIGHT_AT * half),
                    ("disc_height_posterior", mid + DISC_HEIGHT_AT * half)):
        origin = centre + v * posterior
        run = (_chord(lo_fit, v, mid, half), _chord(hi_fit, v, mid, half))
        records.append(cal.record(name, origin, cranial, run))
    return records, []


def _body_height(cal: _Caliper, mask: np.ndarray, centre: np.ndarray, cranial: np.ndarray,
                 posterior: np.ndarray, name: str) -> dict | None:
    """Height of the vertebral body above the disc, between its endplate chords at mid-depth."""
    runs = [r for r in cal.runs(mask, centre, cranial, 0.0, 60.0) if r[0] > 0]
    if not runs:
        return None
    t_mid = 0.5 * (runs[0][0] + runs[0][1])
    ap = _run_at(cal.runs(mask, centre + t_mid * cranial, posterior, -60.0, 60.0), 0.0)
    if ap is None or not ap[0] < 0.0 < ap[1]:
        return None
    mid, half = 0.5 * (ap[0] + ap[1]), 0.5 * (ap[1] - ap[0])
    fits = _fit_surfaces(cal, mask, centre, cranial, posterior, mid, half, at=t_mid)
    if fits is None:
        return None
    origin = centre + mid * posterior
    run = (_chord(fits[0], mid, mid, half), _chord(fits[1], mid, mid, half))
    return cal.record("vertebral_body_height", origin, cranial, run, vertebra=name)


def measure_level(volume: Volume, semantic: np.ndarray, labelling: LevelLabelling,
                  geom: LevelGeometry) -> tuple[list[dict], list[str]]:
    """Measurements of one disc level and the reasons for any that could not be taken."""
    upper_name, lower_name = geom.level.split("-")
    disc = labelling.instances.get(geom.level)
    if disc is None:
        return [], [f"disc {geom.level} not found"]
    n_slices = volume.array.shape[0]
    slice_index = int(np.clip(np.rint(volume.lps_to_index(geom.disc_centre_lps)[0]), 0,
                              n_slices - 1))
    cal = _Caliper(volume, slice_index)
    centre = cal.on_slice(geom.disc_centre_lps)
    cranial, posterior = geom.cranial_lps, geom.posterior_lps
    out: list[dict] = []
    notes: list[str] = []

    canal_record = _canal_ap(volume, labelling.labels == SPIDER_CANAL, geom)
    if canal_record is not None:
        out.append(canal_record)
    else:
        notes.append("canal AP diameter: no canal behind the disc on the mid-sagittal slices")

    upper = labelling.instances.get(upper_name)
    lower = labelling.instances.get(lower_name)
    ap = _run_at(cal.runs(disc.mask, centre, posterior, -60.0, 60.0), 0.0)
    height_runs = _run_at(cal.runs(disc.mask, centre, cranial, -25.0, 25.0), 0.0)
    if ap is None or height_runs is None:
        notes.append("disc heights: disc not on the mid-sagittal slice")
    else:
        bodies = [v.mask for v in (upper, lower) if v is not None]
        records, missing = _disc_heights(cal, disc.mask, bodies, centre, cranial, posterior, ap)
        out += records
        notes += missing

    if upper is not None and height_runs is not None:
        body = None if upper.partial else _body_height(cal, upper.mask, centre, cranial,
                                                       posterior, upper_name)
        if body is not None:
            out.append(body)
        else:
            notes.append(f"vertebral body height: {upper_name} not fully seen")
    if upper is not None and lower is not None and height_runs is not None:
        up_origin = centre + (height_runs[1] + CORNER_OFFSET_MM) * cranial
        lo_origin = centre + (height_runs[0] - CORNER_OFFSET_MM) * cranial
        up_run = _run_at(cal.runs(upper.mask, up_origin, posterior, -60.0, 60.0), 0.0)
        lo_run = _run_at(cal.runs(lower.mask, lo_origin, posterior, -60.0, 60.0), 0.0)
        if up_run is not None and lo_run is not None:
            up_corner = up_origin + up_run[1] * posterior
            lo_corner = lo_origin + lo_run[1] * posterior
            offset = float((lo_corner - up_corner) @ posterior)
            out.append({
                "name": "anterolisthesis", "value": round(offset, 2), "unit": "mm",
                "series_instance_uid": volume.series_instance_uid, "slice": slice_index,
                "sop_instance_uid": volume.sop_instance_uids[slice_index],
                "points_lps": [np.round(up_corner, 3).tolist(), np.round(lo_corner, 3).tolist()],
            })
        else:
            notes.append("anterolisthesis: posterior body corners not found")
    return out, notes


def measure_levels(volume: Volume, semantic: np.ndarray, labelling: LevelLabelling) -> (
        tuple[dict[str, list[dict]], dict[str, list[str]]]):
    """Measurements per level name and the notes for those that could not be taken."""
    measurements: dict[str, list[dict]] = {}
    notes: dict[str, list[str]] = {}
    for geom in labelling.levels:
        measurements[geom.level], notes[geom.level] = measure_level(volume, semantic, labelling,
                                                                    geom)
    return measurements, notes
