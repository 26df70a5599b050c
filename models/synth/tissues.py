"""Tissue classes and the samples they are painted on.

A slice is rendered by "painting": structures are evaluated in a fixed order and each
overwrites the tissue and label of the sample points it contains, so overlaps resolve the
way anatomy does (bone over epidural fat, thecal sac over the bony canal, foraminal fat over
the ligaments around it). Every structure has a bounding sphere so that a slice only
evaluates structures it cuts, on the rows and columns it can reach.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

AIR, FAT, MUSCLE, VISCERA, MARROW, CORTEX, CSF, NERVE, LIGAMENT, VESSEL, EPIFAT, SKIN = range(12)
#: marrow of the posterior elements: thin bone, more cortex than marrow in a thick slice
ARCH = 12
#: marrow oedema (Modic 1) and fatty marrow (Modic 2, haemangioma)
OEDEMA, FATTY = 13, 14
#: disc i: annulus ``DISC_BASE + 3 i``, inner annulus ``+ 1`` (the transition zone that
#: blurs the nucleus edge), nucleus ``+ 2``
DISC_BASE = 16
N_TISSUES = DISC_BASE + 3 * 10


@dataclass
class Samples:
    """Sample points of one slice: LPS coordinates ``px``, ``py``, ``pz`` (K, R, C) float32,
    K points across the slab, with their canal-curve coordinates (``cs``, ``cv``) and
    body-curve coordinates (``bs``, ``bv``, centre plane only: (1, R, C))."""

    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    cs: np.ndarray
    cv: np.ndarray
    bs: np.ndarray
    bv: np.ndarray

    def crop(self, r0: int, r1: int, c0: int, c1: int) -> Samples:
        sl = (slice(None), slice(r0, r1), slice(c0, c1))
        return Samples(self.px[sl], self.py[sl], self.pz[sl], self.cs[sl], self.cv[sl],
                       self.bs[sl], self.bv[sl])

    def dot(self, point: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """(p - point) . direction for every sample."""
        d = direction.astype(np.float32)
        return ((self.px - np.float32(point[0])) * d[0] + (self.py - np.float32(point[1])) * d[1]
                + (self.pz - np.float32(point[2])) * d[2])


Painter = Callable[[Samples, np.ndarray, np.ndarray], None]


@dataclass
class Structure:
    """A painter with the sphere outside of which it never paints (radius inf: everywhere)."""

    name: str
    centre: np.ndarray
    radius: float
    paint: Painter


def paint_slice(
    structures: list[Structure],
    samples: Samples,
    origin: np.ndarray,
    rowdir: np.ndarray,
    coldir: np.ndarray,
    spacing: tuple[float, float],
    half_thickness: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue (K, R, C) uint8 and label (K, R, C) uint16 of one slice."""
    k, rows, cols = samples.px.shape
    tissue = np.zeros((k, rows, cols), dtype=np.uint8)
    label = np.zeros((k, rows, cols), dtype=np.uint16)
    normal = np.cross(rowdir, coldir)
    for st in structures:
        if not np.isfinite(st.radius):
            st.paint(samples, tissue, label)
            continue
        rel = st.centre - origin
        if abs(rel @ normal) > st.radius + half_thickness:
            continue
        rc = rel @ coldir / spacing[0]
        cc = rel @ rowdir / spacing[1]
        r0 = max(int(np.floor(rc - st.radius / spacing[0])), 0)
        r1 = min(int(np.ceil(rc + st.radius / spacing[0])) + 1, rows)
        c0 = max(int(np.floor(cc - st.radius / spacing[1])), 0)
        c1 = min(int(np.ceil(cc + st.radius / spacing[1])) + 1, cols)
        if r0 >= r1 or c0 >= c1:
            continue
        sl = (slice(None), slice(r0, r1), slice(c0, c1))
        st.paint(samples.crop(r0, r1, c0, c1), tissue[sl], label[sl])
    return tissue, label


def put(
    tissue: np.ndarray, label: np.ndarray, mask: np.ndarray, value: int, lab: int | None
) -> None:
    """Paint ``value`` where ``mask``; ``lab`` None keeps the label already there."""
    tissue[mask] = value
    if lab is not None:
        label[mask] = lab


def ellipsoid(x: np.ndarray, v: np.ndarray, w: np.ndarray, centre: tuple[float, float, float],
              axes: tuple[float, float, float], power: float = 2.0) -> np.ndarray:
    """Normalised radius (< 1 inside) of an axis-aligned (super)ellipsoid in a local frame."""
    dx = (x - np.float32(centre[0])) / np.float32(axes[0])
    dv = (v - np.float32(centre[1])) / np.float32(axes[1])
    dw = (w - np.float32(centre[2])) / np.float32(axes[2])
    if power == 2.0:
        return np.sqrt(dx * dx + dv * dv + dw * dw)
    q = np.abs(dx) ** power + np.abs(dv) ** power + np.abs(dw) ** power
    return q ** (1.0 / power)
