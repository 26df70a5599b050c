"""Per-level measurements on the sagittal series: canal AP diameter, disc and body heights,
listhesis (signed: anterolisthesis positive, retrolisthesis negative).

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
from models.plausibility import screen
from models.study import LevelGeometry, Volume

#: sampling step along a caliper ray (mm)
STEP_MM = 0.05
#: anterior/posterior disc heights are reported at this fraction of the half depth from the
#: disc centre, from endplate lines fitted over the central part (rims are rounded)
DISC_HEIGHT_AT = 0.85
#: the endplate lines are fitted between these fractions of the half depth
DISC_FIT_RANGE = 0.7


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


def _body_wall(cal: _Caliper, mask: np.ndarray, centre: np.ndarray, cranial: np.ndarray,
               posterior: np.ndarray, surface: float, sign: float,
               ref: tuple[float, float]) -> tuple[float | None, float] | None:
    """Anterior and posterior wall (t along ``posterior``) of a vertebral body next to a disc.

    Crossed 2-7 mm into the body from the disc surface (clear of the rounded rims and rim
    osteophytes), parallel to the disc plane. A crossing longer than 1.5 disc depths has run
    on into a pedicle or the posterior arch (a slice off the midline), which would read as a
    slip of centimetres: it is dropped. A body segmented only in part (the sacrum often is)
    still gives its posterior wall when the crossing ends within 40 % of a disc depth of the
    disc's posterior margin; the anterior wall needs a crossing of at least 0.6 depths.
    The median of the accepted crossings is kept.
    """
    depth = ref[1] - ref[0]
    fronts, backs = [], []
    for h in np.arange(2.0, 7.5, 1.0):
        origin = centre + (surface + sign * h) * cranial
        runs = cal.runs(mask, origin, posterior, -60.0, 60.0)
        if not runs:
            continue
        best = max(runs, key=lambda r: min(r[1], ref[1]) - max(r[0], ref[0]))
        length = best[1] - best[0]
        if min(best[1], ref[1]) - max(best[0], ref[0]) < 0.3 * depth or length > 1.5 * depth:
            continue
        if abs(best[1] - ref[1]) <= 0.4 * depth:
            backs.append(best[1])
        if length >= 0.6 * depth:
            fronts.append(best[0])
    if len(backs) < 2:
        return None
    return (float(np.median(fronts)) if len(fronts) >= 2 else None), float(np.median(backs))


def _run_lengths(cal: _Caliper, mask: np.ndarray, centre: np.ndarray, cranial: np.ndarray,
                 posterior: np.ndarray, vs: np.ndarray) -> list[tuple[float, float, float]]:
    """(v, low, high) of the run through the disc plane at each position v along posterior."""
    out = []
    for v in vs:
        run = _run_at(cal.runs(mask, centre + v * posterior, cranial, -25.0, 25.0), 0.0)
        if run is not None and run[0] - 3.0 < 0.0 < run[1] + 3.0:
            out.append((float(v), run[0], run[1]))
    return out


def _disc_heights(cal: _Caliper, mask: np.ndarray, walls: tuple[float, float] | None,
                  centre: np.ndarray, cranial: np.ndarray, posterior: np.ndarray,
                  ap: tuple[float, float]) -> tuple[list[dict], list[str]]:
    """Anterior, posterior and mean disc height, each read straight from the disc's extent.

    Heights are read at 85 % of the half depth from the centre, as a reader places the
    caliper inside the rims; the depth is that of the adjacent bony endplates where they are
    found (a bulge or herniation moves the disc's own margin, not the bone's). Each height is
    the median of the disc's thickness over a 2 mm band around that point: no line is
    extrapolated, so a height can never come out negative. The mean height is the disc's
    area over its depth on that slice, the figure least sensitive to one bad sample.
    """
    lo, hi = walls if walls is not None else ap
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    records: list[dict] = []
    for name, frac in (("disc_height_anterior", -DISC_HEIGHT_AT),
                       ("disc_height_posterior", DISC_HEIGHT_AT)):
        v0 = mid + frac * half
        samples = _run_lengths(cal, mask, centre, cranial, posterior,
                               v0 + np.linspace(-1.0, 1.0, 9))
        if len(samples) < 5:
            continue
        lengths = np.array([s[2] - s[1] for s in samples])
        k = int(np.argmin(np.abs(lengths - np.median(lengths))))
        v, low, high = samples[k]
        records.append(cal.record(name, centre + v * posterior, cranial, (low, high)))
    inner = _run_lengths(cal, mask, centre, cranial, posterior,
                         mid + half * np.linspace(-DISC_HEIGHT_AT, DISC_HEIGHT_AT, 35))
    if len(inner) >= 20:
        lengths = np.array([s[2] - s[1] for s in inner])
        value = float(np.mean(lengths))
        v, low, high = min(inner, key=lambda s: abs(s[0] - mid))
        centre_t = 0.5 * (low + high)
        records.append(cal.record("disc_height_mean", centre + v * posterior, cranial,
                                  (centre_t - value / 2, centre_t + value / 2)))
    names = {r["name"] for r in records}
    missing = [f"{n}: too few samples across the disc on the mid-sagittal slice"
               for n in ("disc_height_anterior", "disc_height_posterior") if n not in names]
    return records, missing


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
    walls: dict[str, tuple[float | None, float] | None] = {"upper": None, "lower": None}
    if ap is None or height_runs is None:
        notes.append("disc heights: disc not on the mid-sagittal slice")
    else:
        for key, inst, surface, sign in (("upper", upper, height_runs[1], 1.0),
                                         ("lower", lower, height_runs[0], -1.0)):
            if inst is not None:
                walls[key] = _body_wall(cal, inst.mask, centre, cranial, posterior, surface,
                                        sign, ap)
        found = [(w[0], w[1]) for w in walls.values() if w is not None and w[0] is not None]
        span = (float(np.mean([w[0] for w in found])),
                float(np.mean([w[1] for w in found]))) if found else None
        records, missing = _disc_heights(cal, disc.mask, span, centre, cranial, posterior, ap)
        out += records
        notes += missing

    if upper is not None and height_runs is not None:
        body = None if upper.partial else _body_height(cal, upper.mask, centre, cranial,
                                                       posterior, upper_name)
        if body is not None:
            out.append(body)
        else:
            notes.append(f"vertebral body height: {upper_name} not fully seen")
    up_wall, lo_wall = walls["upper"], walls["lower"]
    if up_wall is not None and lo_wall is not None and height_runs is not None:
        up_corner = centre + (height_runs[1] + 2.0) * cranial + up_wall[1] * posterior
        lo_corner = centre + (height_runs[0] - 2.0) * cranial + lo_wall[1] * posterior
        offset = float(lo_wall[1] - up_wall[1])
        out.append({
            "name": "listhesis", "value": round(offset, 2), "unit": "mm",
            "direction": "anterolisthesis" if offset >= 0 else "retrolisthesis",
            "series_instance_uid": volume.series_instance_uid, "slice": slice_index,
            "sop_instance_uid": volume.sop_instance_uids[slice_index],
            "points_lps": [np.round(up_corner, 3).tolist(), np.round(lo_corner, 3).tolist()],
        })
    elif height_runs is not None and upper is not None and lower is not None:
        notes.append("listhesis: posterior walls of the vertebral bodies not found")
    kept, withheld = screen(out)
    return kept, notes + withheld


def measure_levels(volume: Volume, semantic: np.ndarray, labelling: LevelLabelling) -> (
        tuple[dict[str, list[dict]], dict[str, list[str]]]):
    """Measurements per level name and the notes for those that could not be taken."""
    measurements: dict[str, list[dict]] = {}
    notes: dict[str, list[str]] = {}
    for geom in labelling.levels:
        measurements[geom.level], notes[geom.level] = measure_level(volume, semantic, labelling,
                                                                    geom)
    return measurements, notes
