"""Frames and curve coordinates in patient space (LPS, millimetres).

Anatomy is described in local frames so that any scanner grid, sagittal or tilted axial,
samples the same patient: a vertebra is rigid in its own frame, while tube-like tissues
(the thecal sac, the body wall) follow the lordotic curve through curve coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.ndimage import map_coordinates
from scipy.spatial import cKDTree

LEFT = np.array([1.0, 0.0, 0.0])


def cranial(tilt_deg: float) -> np.ndarray:
    """Cranial axis of a segment tilted ``tilt_deg`` forwards (anterior) from vertical."""
    t = np.radians(tilt_deg)
    return np.array([0.0, -np.sin(t), np.cos(t)])


def anterior(tilt_deg: float) -> np.ndarray:
    """Anterior axis of a segment, perpendicular to :func:`cranial` in the sagittal plane."""
    t = np.radians(tilt_deg)
    return np.array([0.0, -np.cos(t), -np.sin(t)])


@dataclass(frozen=True)
class Frame:
    """Rigid local frame: ``x`` towards patient left, ``v`` anterior, ``w`` cranial."""

    origin: np.ndarray
    tilt_deg: float

    def __post_init__(self) -> None:
        axes = np.stack([LEFT, anterior(self.tilt_deg), cranial(self.tilt_deg)])
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "_o32", self.origin.astype(np.float32))
        object.__setattr__(self, "_a32", np.ascontiguousarray(axes.T, dtype=np.float32))

    def local(self, px: np.ndarray, py: np.ndarray, pz: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LPS coordinate arrays to local (x, v, w) arrays (float32, elementwise: a 3x3
        matmul over millions of points is slower than nine multiply-adds)."""
        o = self._o32  # type: ignore[attr-defined]
        a = self._a32  # type: ignore[attr-defined]
        dx, dy, dz = px - o[0], py - o[1], pz - o[2]
        return (dx * a[0, 0] + dy * a[1, 0] + dz * a[2, 0],
                dx * a[0, 1] + dy * a[1, 1] + dz * a[2, 1],
                dx * a[0, 2] + dy * a[1, 2] + dz * a[2, 2])

    def to_lps(self, x: float, v: float, w: float) -> np.ndarray:
        ax = self.axes
        return self.origin + x * ax[0] + v * ax[1] + w * ax[2]


class CurveCoords:
    """Arc length ``s`` and signed anterior offset ``v`` from a curve in the mid-sagittal plane.

    The nearest-point projection is tabulated once on a 1 mm (y, z) grid, so mapping the
    millions of sample points of a series costs two bilinear interpolations.
    """

    def __init__(self, points: np.ndarray, extend_mm: float = 200.0, margin_mm: float = 240.0,
                 step_mm: float = 3.0):
        pts = np.asarray(points, dtype=np.float64)
        chord = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
        spline = CubicSpline(chord, pts[:, 1:], bc_type="natural")
        fine_t = np.linspace(0.0, chord[-1], 4000)
        fine = spline(fine_t)
        arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(fine, axis=0), axis=1))]
        s_core = np.arange(0.0, arc[-1], 0.5)
        yz = np.stack([np.interp(s_core, arc, fine[:, 0]), np.interp(s_core, arc, fine[:, 1])], 1)
        t_lo = yz[1] - yz[0]
        t_hi = yz[-1] - yz[-2]
        t_lo /= np.linalg.norm(t_lo)
        t_hi /= np.linalg.norm(t_hi)
        n_ext = int(extend_mm / 0.5)
        steps = np.arange(1, n_ext + 1)[:, None] * 0.5
        yz = np.concatenate([yz[0] - steps[::-1] * t_lo, yz, yz[-1] + steps * t_hi])
        self.s = np.arange(len(yz)) * 0.5 - n_ext * 0.5
        self.yz = yz
        tang = np.gradient(yz, axis=0)
        tang /= np.linalg.norm(tang, axis=1, keepdims=True)
        self.tangent = tang
        # anterior normal (y, z): rotate the cranial tangent so that it points to -y.
        self.normal = np.stack([-tang[:, 1], tang[:, 0]], axis=1)
        core = yz[n_ext : n_ext + len(s_core)]
        self.y0 = float(core[:, 0].min() - margin_mm)
        self.z0 = float(core[:, 1].min() - margin_mm)
        self.step = step_mm
        ny = int((core[:, 0].max() + margin_mm - self.y0) / step_mm) + 1
        nz = int((core[:, 1].max() + margin_mm - self.z0) / step_mm) + 1
        gy, gz = np.meshgrid(self.y0 + step_mm * np.arange(ny), self.z0 + step_mm * np.arange(nz),
                             indexing="ij")
        grid = np.stack([gy.ravel(), gz.ravel()], axis=1)
        _, idx = cKDTree(yz).query(grid)
        rel = grid - yz[idx]
        self._s_grid = (self.s[idx] + np.sum(rel * tang[idx], axis=1)).reshape(ny, nz)
        self._v_grid = np.sum(rel * self.normal[idx], axis=1).reshape(ny, nz)

    def coords(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points (..., 3) to (s, v) arrays of the same leading shape (float32)."""
        shape = points.shape[:-1]
        iy = ((points[..., 1].ravel() - self.y0) / self.step).astype(np.float32)
        iz = ((points[..., 2].ravel() - self.z0) / self.step).astype(np.float32)
        s = map_coordinates(self._s_grid, [iy, iz], order=1, mode="nearest")
        v = map_coordinates(self._v_grid, [iy, iz], order=1, mode="nearest")
        return s.reshape(shape).astype(np.float32), v.reshape(shape).astype(np.float32)

    def project(self, point: np.ndarray) -> float:
        """Arc length of the nearest curve point to one LPS point."""
        s, _ = self.coords(np.asarray(point, dtype=np.float64)[None, :])
        return float(s[0])

    def point(self, s: float) -> np.ndarray:
        """LPS point on the curve (x = 0) at arc length ``s``."""
        y = np.interp(s, self.s, self.yz[:, 0])
        z = np.interp(s, self.s, self.yz[:, 1])
        return np.array([0.0, y, z])
