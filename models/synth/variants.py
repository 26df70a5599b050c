"""Study variants: what a PACS sometimes sends besides a clean three-series lumbar study.

The localizer is a real 3-plane scout through the same patient; the non-lumbar study is a
brain MR (head, skull, ventricles, grey and white matter) with no spine at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from .anatomy import Anatomy
from .contrast import NoiseField, rician
from .dicomio import StudyInfo, Timing
from .series import SliceGeom, plane, render, to_uint16
from .tissues import Structure
from .writer import SeriesRecord, write_series

VARIANTS: tuple[str, ...] = (
    "missing_sag_t1", "missing_ax_t2", "localizer", "non_lumbar", "duplicate_instances",
    "duplicate_position", "out_of_order", "transitional", "corrupt", "stir",
)


def check_variants(variants: list[str] | tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; expected any of {VARIANTS}")
        if v not in out:
            out.append(v)
    return out


def localizer_slices(anatomy: Anatomy) -> list[SliceGeom]:
    """Sagittal, coronal and axial scout planes through L3 (thick, coarse)."""
    c = anatomy.vertebra("L3").centre.copy()
    ps, n, t = 1.5, 256, 8.0
    return [
        plane(c, np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0]), n, n, ps, t),
        plane(c, np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0]), n, n, ps, t),
        plane(c, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), n, n, ps, t),
    ]


def write_localizer(out_dir: Path, anatomy: Anatomy, structures: list[Structure],
                    info: StudyInfo, noise: NoiseField, rng: np.random.Generator) -> SeriesRecord:
    slices = localizer_slices(anatomy)
    images, _ = render(anatomy, structures, slices, ["T1"], noise, rng, subsamples=1)
    pixels = to_uint16(images["T1"], rng)
    tim = Timing(round(rng.uniform(6.0, 9.0), 2), round(rng.uniform(2.0, 3.5), 2), None, 1)
    rec = write_series(out_dir, "localizer", "other", info, slices, pixels, series_number=1,
                       spacing_between=8.0, tim=tim, rng=rng,
                       image_types=[("ORIGINAL", "PRIMARY", "LOCALIZER")] * 3)
    rec.extra["weighting"] = "localizer"
    return rec


def _brain_slice(p: np.ndarray, weighting: str, head: tuple[float, float, float]
                 ) -> np.ndarray:
    """Head phantom signal at points (..., 3) centred at the origin."""
    a, b, c = head
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    r = np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2)
    t2 = weighting == "T2"
    sig = np.zeros(r.shape, np.float32)
    sig[r < 1.0] = 0.55 if t2 else 0.85  # scalp
    sig[r < 0.95] = 0.05  # skull
    sig[r < 0.90] = 0.95 if t2 else 0.15  # CSF over the convexity
    sig[r < 0.87] = 0.62 if t2 else 0.48  # cortex (grey matter)
    wm = r < 0.70 + 0.05 * np.sin(x / 6.0) * np.cos(y / 7.0)
    sig[wm] = 0.38 if t2 else 0.62
    vent = (((np.abs(x) - 9.0) / 6.0) ** 2 + (y / 28.0) ** 2 + ((z - 12.0) / 12.0) ** 2) < 1
    sig[vent & (r < 0.7)] = 1.0 if t2 else 0.12
    return sig


def write_brain_study(out_dir: Path, info: StudyInfo, rng: np.random.Generator
                      ) -> list[SeriesRecord]:
    """An axial T2 brain series: a study the node must recognise and turn away."""
    head = (rng.uniform(68, 76), rng.uniform(88, 98), rng.uniform(80, 90))
    n, rows, ps, gap = 18, 256, 0.9, 6.0
    slices = [plane(np.array([0.0, 0.0, -40.0 + k * gap]), np.array([1.0, 0.0, 0.0]),
                     np.array([0.0, 1.0, 0.0]), rows, rows, ps, 5.0) for k in range(n)]
    imgs = np.zeros((n, rows, rows), np.float32)
    for k, g in enumerate(slices):
        sig = _brain_slice(g.points(np.array([-1.5, 0.0, 1.5])), "T2", head).mean(axis=0)
        imgs[k] = rician(gaussian_filter(sig, 0.7), 0.02, rng)
    tim = Timing(round(rng.uniform(4000, 6000), 1), round(rng.uniform(90, 110), 2), None, 16)
    rec = write_series(out_dir, "brain_t2", "other", info, slices, to_uint16(imgs, rng),
                       series_number=2, spacing_between=gap, tim=tim, rng=rng)
    rec.extra["weighting"] = "T2"
    return [rec]
