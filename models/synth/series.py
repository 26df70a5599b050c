"""Scanner grids (sagittal block, axial stack or angled per-disc blocks) and their rendering.

Each slice is sampled at a few points across its thickness and the tissue signals are
averaged, which is the partial-volume blur of a thick slice; labels come from the slice's
centre plane.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from lumbar_common.vocabulary import LEVELS, SPIDER_PARTIAL_OFFSET

from .anatomy import E_ANT, Anatomy
from .contrast import NoiseField, bias_field, rician, texture_table, tissue_table
from .geometry import cranial
from .tissues import Samples, Structure, paint_slice


@dataclass(frozen=True)
class SliceGeom:
    """One image plane: ``ipp`` is the centre of the first pixel (row 0, column 0)."""

    ipp: np.ndarray
    rowdir: np.ndarray  # direction of increasing column (IOP[0:3])
    coldir: np.ndarray  # direction of increasing row (IOP[3:6])
    rows: int
    cols: int
    spacing: tuple[float, float]  # (row spacing, column spacing) = PixelSpacing
    thickness: float

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.rowdir, self.coldir)

    def components(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LPS x, y, z arrays (K, R, C) of the slice's pixels at ``offsets`` along the normal."""
        r = np.arange(self.rows, dtype=np.float32)[:, None] * np.float32(self.spacing[0])
        c = np.arange(self.cols, dtype=np.float32)[None, :] * np.float32(self.spacing[1])
        out = []
        for i in range(3):
            plane = (np.float32(self.ipp[i]) + c * np.float32(self.rowdir[i])
                     + r * np.float32(self.coldir[i]))
            off = np.asarray(offsets, dtype=np.float32)[:, None, None] * np.float32(
                self.normal[i])
            out.append(np.ascontiguousarray(plane[None] + off))
        return out[0], out[1], out[2]

    def points(self, offsets: np.ndarray) -> np.ndarray:
        r = np.arange(self.rows, dtype=np.float32)[:, None, None] * np.float32(self.spacing[0])
        c = np.arange(self.cols, dtype=np.float32)[None, :, None] * np.float32(self.spacing[1])
        plane = (self.ipp.astype(np.float32) + c * self.rowdir.astype(np.float32)
                 + r * self.coldir.astype(np.float32))
        off = np.asarray(offsets, dtype=np.float32)[:, None, None, None]
        return plane[None] + off * self.normal.astype(np.float32)


@dataclass
class SeriesPlan:
    key: str
    weighting: str
    slices: list[SliceGeom]
    spacing_between: float
    #: level each slice was planned through (per-level axial blocks), else None
    slice_levels: list[str | None] = field(default_factory=list)
    mode: str = ""


def plane(centre: np.ndarray, rowdir: np.ndarray, coldir: np.ndarray, rows: int, cols: int,
           ps: float, thickness: float) -> SliceGeom:
    ipp = centre - 0.5 * (cols - 1) * ps * rowdir - 0.5 * (rows - 1) * ps * coldir
    return SliceGeom(ipp, rowdir, coldir, rows, cols, (ps, ps), thickness)


def _rotation(yaw_deg: float, roll_deg: float) -> np.ndarray:
    a, b = np.radians(yaw_deg), np.radians(roll_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return rz @ ry


def sagittal_plan(anatomy: Anatomy, rng: np.random.Generator, key: str, weighting: str,
                  matrix: int | None = None) -> SeriesPlan:
    """A sagittal block centred on the canal, top edge set by the patient's field of view."""
    n = int(rng.integers(13, 18))
    thickness = float(rng.choice([3.0, 3.5, 4.0]))
    gap = thickness * float(rng.choice([1.0, 1.1]))
    top_v = anatomy.vertebra(anatomy.top_vertebra)
    if anatomy.top_vertebra == "L1":
        top_z = top_v.endplate(True)[2] + rng.uniform(3.0, 12.0)
    else:
        top_z = top_v.centre[2] + rng.uniform(-0.3, 0.3) * top_v.height
    bottom_z = anatomy.vertebra("S3").centre[2] - 10.0
    rows = int(rng.choice([320, 352, 384]))
    ps = float(np.clip((top_z - bottom_z) / rows, 0.55, 0.8))
    if matrix:  # smaller images (tests): same field of view, coarser pixels
        ps, rows = ps * rows / matrix, matrix
    ps = round(ps, 4)
    rot = _rotation(rng.uniform(-3.0, 3.0), rng.uniform(-2.0, 2.0))
    rowdir = rot @ np.array([0.0, 1.0, 0.0])
    coldir = rot @ np.array([0.0, 0.0, -1.0])
    normal = np.cross(rowdir, coldir)
    l3 = anatomy.vertebra("L3")
    canal_y = l3.frame.to_lps(0.0, l3.canal_v, 0.0)[1]
    centre_y = canal_y - (rng.uniform(0.58, 0.66) - 0.5) * rows * ps
    centre = np.array([rng.uniform(-2.0, 2.0), centre_y, top_z - 0.5 * rows * ps])
    slices = []
    for k in range(n):
        c = centre + (k - 0.5 * (n - 1)) * gap * normal
        slices.append(plane(c, rowdir, coldir, rows, rows, ps, thickness))
    return SeriesPlan(key, weighting, slices, gap, [None] * n, "sagittal")


def axial_plan(anatomy: Anatomy, rng: np.random.Generator, mode: str,
               matrix: int | None = None) -> SeriesPlan:
    """Axial T2: one block angled through each disc, or one continuous stack."""
    if mode not in ("per-level", "stack"):
        raise ValueError(f"axial mode {mode!r} is not 'per-level' or 'stack'")
    rows = int(rng.choice([256, 288, 320]))
    ps = float(rng.uniform(0.6, 0.75))
    if matrix:
        ps, rows = ps * rows / matrix, matrix
    ps = round(ps, 4)
    thickness = float(rng.choice([3.5, 4.0]))
    rowdir = np.array([1.0, 0.0, 0.0])
    slices: list[SliceGeom] = []
    levels: list[str | None] = []
    if mode == "per-level":
        n = int(rng.integers(3, 6))
        gap = thickness * float(rng.choice([1.0, 1.1, 1.2]))
        for level in LEVELS:
            disc = anatomy.disc(level)
            normal = disc.normal
            coldir = np.cross(normal, rowdir)
            shift = (disc.ry + E_ANT + anatomy.sac_half_ap) * 0.5 + rng.uniform(-6.0, 6.0)
            base = disc.centre + shift * coldir + rng.uniform(-1.0, 1.0) * normal
            for k in range(n):
                c = base + (k - 0.5 * (n - 1)) * gap * normal
                slices.append(plane(c, rowdir, coldir, rows, rows, ps, thickness))
                levels.append(level)
        return SeriesPlan("ax_t2", "T2", slices, gap, levels, mode)
    tilt = float(np.mean([anatomy.vertebra(v).frame.tilt_deg for v in ("L2", "L3", "L4")]))
    tilt = tilt * rng.uniform(0.0, 1.0)
    normal = cranial(tilt)
    coldir = np.cross(normal, rowdir)
    top = anatomy.disc("L1-L2").centre
    bottom = anatomy.disc("L5-S1").centre
    gap = float(rng.choice([4.0, 4.5, 5.0]))
    lo = (bottom @ normal) - 8.0
    hi = (top @ normal) + 8.0
    n = int(np.ceil((hi - lo) / gap)) + 1
    l3 = anatomy.vertebra("L3")
    anchor = l3.frame.to_lps(0.0, 0.5 * l3.canal_v, 0.0)
    for k in range(n):
        c = anchor + ((lo + k * gap) - anchor @ normal) * normal
        slices.append(plane(c, rowdir, coldir, rows, rows, ps, thickness))
        levels.append(None)
    return SeriesPlan("ax_t2", "T2", slices, gap, levels, mode)


def render(
    anatomy: Anatomy,
    structures: list[Structure],
    slices: list[SliceGeom],
    weightings: list[str],
    noise: NoiseField,
    rng: np.random.Generator,
    subsamples: int = 3,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Images (float32, [slice,row,col]) per weighting, and centre-plane labels."""
    degen = [d.degeneration for d in anatomy.discs]
    tables = {w: tissue_table(w, degen, rng) for w in weightings}
    amp, fine = texture_table()
    bias_coeffs = np.array([rng.uniform(85.0, 135.0), rng.uniform(220.0, 320.0),
                            rng.uniform(-0.12, 0.12)])
    s_centre = anatomy.canal.project(anatomy.vertebra("L3").centre)
    sigma = rng.uniform(0.025, 0.045)
    rows, cols = slices[0].rows, slices[0].cols
    images = {w: np.zeros((len(slices), rows, cols), np.float32) for w in weightings}
    labels = np.zeros((len(slices), rows, cols), np.uint16)
    for i, geom in enumerate(slices):
        offs = (np.arange(subsamples) - 0.5 * (subsamples - 1)) * geom.thickness / subsamples
        px, py, pz = geom.components(offs)
        cs, cv = _smooth(anatomy.canal.coords, geom, offs, 4)
        bs, bv = _smooth(anatomy.body.coords, geom, offs[subsamples // 2 : subsamples // 2 + 1], 8)
        smp = Samples(px, py, pz, cs, cv, bs, bv)
        tissue, label = paint_slice(structures, smp, geom.ipp, geom.rowdir, geom.coldir,
                                    geom.spacing, 0.5 * geom.thickness)
        mid = subsamples // 2
        labels[i] = label[mid]
        (coarse,) = _smooth(lambda q: (noise.sample(q),), geom, offs[mid : mid + 1], 2)
        # fine grain (trabecular bone, muscle fibres) at about a millimetre
        grain = gaussian_filter(rng.standard_normal((rows, cols), dtype=np.float32),
                                0.7 / geom.spacing[0] + 0.3)
        grain *= np.float32(1.0 / (grain.std() + 1e-6))
        tex = 1.0 + amp[tissue[mid]] * coarse[0] + fine[tissue[mid]] * grain
        back = bv[0] + anatomy.habitus.skin_posterior
        gain = bias_field(back, bs[0], s_centre, bias_coeffs)
        for w in weightings:
            img = tables[w][tissue].mean(axis=0) * tex * gain
            img = gaussian_filter(img, 0.55)
            images[w][i] = rician(img, sigma, rng)
    return images, labels


def _interp_index(n: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coarse sample indices, and for every fine index its left coarse neighbour and weight."""
    coarse = np.arange(0, n - 1 + stride, stride)
    t = np.arange(n) / stride
    j = np.minimum(np.floor(t).astype(int), len(coarse) - 2)
    return coarse, j, (t - j).astype(np.float32)


def _smooth(fn: Callable[[np.ndarray], tuple[np.ndarray, ...]], geom: SliceGeom,
            offsets: np.ndarray, stride: int) -> tuple[np.ndarray, ...]:
    """Evaluate a smooth field on a coarse grid of the plane and interpolate it to every
    pixel: curve coordinates and texture vary over millimetres, not pixels."""
    rc, jr, fr = _interp_index(geom.rows, stride)
    cc, jc, fc = _interp_index(geom.cols, stride)
    r = rc.astype(np.float32)[:, None, None] * np.float32(geom.spacing[0])
    c = cc.astype(np.float32)[None, :, None] * np.float32(geom.spacing[1])
    plane = (geom.ipp.astype(np.float32) + c * geom.rowdir.astype(np.float32)
             + r * geom.coldir.astype(np.float32))
    off = np.asarray(offsets, dtype=np.float32)[:, None, None, None]
    pts = plane[None] + off * geom.normal.astype(np.float32)
    out = []
    for o in fn(pts):
        o = o.astype(np.float32)
        rows = o[:, jr] * (1 - fr)[None, :, None] + o[:, jr + 1] * fr[None, :, None]
        out.append(rows[:, :, jc] * (1 - fc) + rows[:, :, jc + 1] * fc)
    return tuple(out)


def mark_partial(anatomy: Anatomy, labels: np.ndarray, slices: list[SliceGeom]) -> list[str]:
    """Relabel vertebrae whose body the field of view cuts as partially visible (100 + n)."""
    geom = slices[0]
    partial = []
    for vert in anatomy.vertebrae:
        if vert.kind == "sacral":
            continue
        corners = [vert.frame.to_lps(0.0, v, w) for v in (-vert.ry, vert.ry)
                   for w in (-0.5 * vert.height, 0.5 * vert.height)]
        rows = [(c - geom.ipp) @ geom.coldir / geom.spacing[0] for c in corners]
        cut = min(rows) < 0 or max(rows) > geom.rows - 1
        present = bool(np.any(labels == vert.label))
        if cut and present:
            labels[labels == vert.label] = SPIDER_PARTIAL_OFFSET + vert.label
            partial.append(vert.name)
    return partial


def volume_affine(slices: list[SliceGeom], spacing_between: float) -> np.ndarray:
    """4x4 affine mapping (slice, row, col, 1) to LPS for a block sorted along its normal."""
    g = slices[0]
    aff = np.eye(4)
    normal = g.normal
    if len(slices) > 1:
        step = slices[1].ipp - slices[0].ipp
    else:
        step = normal * spacing_between
    aff[:3, 0] = step
    aff[:3, 1] = g.coldir * g.spacing[0]
    aff[:3, 2] = g.rowdir * g.spacing[1]
    aff[:3, 3] = g.ipp
    return aff


def to_uint16(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale to the vendor-like stored range (max a few thousand), deterministic per seed."""
    top = float(np.percentile(images, 99.8)) or 1.0
    scale = rng.uniform(1400.0, 3200.0) / top
    return np.clip(np.rint(images * scale), 0, 65535).astype(np.uint16)
