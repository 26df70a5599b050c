"""A patient's lumbar spine in patient space, drawn from a seed.

Vertebrae are stacked from the sacrum upwards along a lordotic chain: each segment has its
own forward tilt, and each disc fills the wedge between two endplates, so anterior disc
heights exceed posterior ones by exactly the lordosis at that level (largest at L5-S1).
Sizes, lordosis, sacral slope, canal size and body habitus vary per patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lumbar_common.vocabulary import LEVELS, spider_disc_label, spider_vertebra_label

from .geometry import CurveCoords, Frame, cranial
from .pathology import LevelPathology, level_pathology

#: caudal -> cranial mobile vertebrae that may be modelled above the sacrum
MOBILE = ("L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10")
#: body height, AP depth, width (mm) of a mid-sized adult, and the lordosis offset (deg)
_SIZE = {
    "L5": (26.5, 38.0, 50.0, 16.0), "L4": (27.0, 37.5, 48.0, 28.0),
    "L3": (27.0, 36.5, 46.0, 38.0), "L2": (26.5, 35.0, 43.0, 46.0),
    "L1": (25.5, 33.0, 40.0, 51.0), "T12": (23.5, 31.0, 37.0, 54.0),
    "T11": (22.0, 29.0, 35.0, 56.0), "T10": (21.0, 28.0, 33.0, 57.0),
}
#: disc height at the centre (mm) of the disc above each vertebra
_DISC_H = {"S1": 10.5, "L5": 11.0, "L4": 10.5, "L3": 9.5, "L2": 8.5, "L1": 7.5,
           "T12": 6.5, "T11": 6.0}
_SACRAL = (("S1", 28.0, 33.0, 46.0, 0.0), ("S2", 22.0, 26.0, 38.0, -9.0),
           ("S3", 18.0, 21.0, 30.0, -20.0), ("S4", 15.0, 16.0, 24.0, -31.0),
           ("S5", 12.0, 12.0, 18.0, -42.0))
E_ANT = 2.0  # anterior epidural space + posterior longitudinal ligament (mm)
#: depth (mm) of the endplate concavity at the body's centre; it falls to zero at the rim
#: as 1 - e^2 with e the normalised axial radius
ENDPLATE_CONCAVITY_MM = 0.9


@dataclass
class Vertebra:
    name: str
    label: int
    frame: Frame
    height: float
    ry: float
    rx: float
    kind: str  # "lumbar", "thoracic" or "sacral"
    canal_v: float  # v of the canal centre in this frame (negative: posterior)
    #: focal marrow lesions: (kind "fatty" | "edema", local centre (x, v, w), radius mm)
    lesions: list[tuple[str, tuple[float, float, float], float]] = field(default_factory=list)
    #: Modic change at the (lower, upper) endplate: 0 none, 1 oedema, 2 fatty
    modic: tuple[int, int] = (0, 0)

    @property
    def centre(self) -> np.ndarray:
        return self.frame.origin

    def endplate(self, upper: bool) -> np.ndarray:
        return self.frame.to_lps(0.0, 0.0, (0.5 if upper else -0.5) * self.height)


@dataclass
class Disc:
    level: str
    label: int
    frame: Frame
    lower: Vertebra
    upper: Vertebra
    height: float
    rx: float
    ry: float
    pathology: LevelPathology | None
    height_anterior: float = 0.0
    height_posterior: float = 0.0

    @property
    def centre(self) -> np.ndarray:
        return self.frame.origin

    @property
    def normal(self) -> np.ndarray:
        return cranial(self.frame.tilt_deg)

    @property
    def bulge(self) -> float:
        return self.pathology.bulge_mm if self.pathology else 0.0

    @property
    def degeneration(self) -> float:
        return self.pathology.degeneration if self.pathology else 0.1

    def height_at(self, v: float) -> float:
        """Distance between the two endplate chords (the planes through the rims, as a
        radiologist's caliper spans them) along the disc normal at anterior offset v."""
        q = self.frame.to_lps(0.0, v, 0.0)
        n = self.normal
        lo_n, up_n = cranial(self.lower.frame.tilt_deg), cranial(self.upper.frame.tilt_deg)
        lam_lo = lo_n @ (self.lower.endplate(True) - q) / (lo_n @ n)
        lam_up = up_n @ (self.upper.endplate(False) - q) / (up_n @ n)
        return float(lam_up - lam_lo)


@dataclass
class Habitus:
    skin_posterior: float  # mm behind the canal centre line
    fat: float
    body_ap: float
    half_width: float


@dataclass
class Anatomy:
    vertebrae: list[Vertebra]  # caudal -> cranial, sacral segments first
    discs: list[Disc]  # caudal -> cranial
    canal: CurveCoords
    body: CurveCoords
    sac_half_width: float
    sac_half_ap: float
    habitus: Habitus
    grades: dict[str, str]
    transitional: bool
    top_vertebra: str  # most cranial vertebra meant to be (at least partly) in view
    bump_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bump_bulge: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bump_flavum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    conus_s: float = 0.0
    sac_end_s: float = 0.0
    _sten_s: np.ndarray | None = None
    _sten_b: np.ndarray | None = None
    _sten_f: np.ndarray | None = None

    def vertebra(self, name: str) -> Vertebra:
        for v in self.vertebrae:
            if v.name == name:
                return v
        raise KeyError(name)

    def disc(self, level: str) -> Disc:
        for d in self.discs:
            if d.level == level:
                return d
        raise KeyError(level)

    def stenosis(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Disc bulge and flavum thickening (mm) along the canal at arc lengths ``s``."""
        if self._sten_s is None:
            grid = np.arange(-300.0, 900.0, 0.25)
            b = np.zeros_like(grid)
            f = np.zeros_like(grid)
            for sk, bk, fk in zip(self.bump_s, self.bump_bulge, self.bump_flavum, strict=True):
                b += bk * np.exp(-0.5 * ((grid - sk) / 4.5) ** 2)
                f += fk * np.exp(-0.5 * ((grid - sk) / 5.5) ** 2)
            self._sten_s, self._sten_b, self._sten_f = grid, b, f
        return (np.interp(s, self._sten_s, self._sten_b).astype(np.float32),
                np.interp(s, self._sten_s, self._sten_f).astype(np.float32))

    def canal_ap_at(self, s: float) -> float:
        """Thecal sac AP (mm) at arc length ``s``, from the analytic bumps (the table that
        :meth:`stenosis` interpolates for speed agrees within 0.01 mm)."""
        d = s - self.bump_s
        b = np.sum(self.bump_bulge * np.exp(-0.5 * (d / 4.5) ** 2))
        f = np.sum(self.bump_flavum * np.exp(-0.5 * (d / 5.5) ** 2))
        return float(2 * self.sac_half_ap - b - f)


def build_anatomy(
    rng: np.random.Generator, grades: dict[str, str], *, transitional: bool = False
) -> Anatomy:
    """Draw one patient: sizes, lordosis, pathology shapes, canal and body habitus."""
    scale = rng.uniform(0.9, 1.1)
    sacral_slope = rng.uniform(32.0, 48.0)
    lordosis = rng.uniform(0.7, 1.25)
    sac_half_width = rng.uniform(8.0, 10.5)
    sac_half_ap = rng.uniform(5.6, 7.6)
    origin = np.array([rng.uniform(-3, 3), rng.uniform(-15, 15), rng.uniform(-130, -90)])

    vertebrae: list[Vertebra] = []
    # sacrum: from the S1 upper endplate downwards, curving forwards
    top = origin
    for name, h, depth, width, dtilt in _SACRAL:
        tilt = sacral_slope + dtilt
        centre = top - 0.5 * h * scale * cranial(tilt)
        ry = 0.5 * depth * scale
        vertebrae.append(Vertebra(name, spider_vertebra_label("S1"), Frame(centre, tilt), h * scale,
                                  ry, 0.5 * width * scale, "sacral",
                                  -(ry + E_ANT + sac_half_ap * (0.8 if name == "S1" else 0.5))))
        top = centre - 0.5 * h * scale * cranial(tilt) + 0.4 * cranial(tilt)  # fused
    vertebrae = vertebrae[::-1]  # caudal -> cranial

    level_paths: dict[str, LevelPathology] = {}
    for level in LEVELS:
        level_paths[level] = level_pathology(rng, grades, level, 2 * sac_half_ap)

    discs: list[Disc] = []
    lower = vertebrae[-1]
    for name in MOBILE:
        h, depth, width, offset = _SIZE[name]
        kind = "thoracic" if name.startswith("T") else "lumbar"
        if transitional and name == "T12":
            h, depth, width, offset = _SIZE["L1"][:3] + (_SIZE["T12"][3],)
            kind = "lumbar"
        tilt = sacral_slope - lordosis * offset + rng.normal(0.0, 1.5)
        level = f"{name}-{lower.name}"
        path = level_paths.get(level)
        disc_tilt = 0.5 * (tilt + lower.frame.tilt_deg)
        wedge = abs(lower.frame.tilt_deg - tilt)
        ry_d = 0.5 * (lower.ry + 0.5 * depth * scale)
        h_c = _DISC_H[lower.name] * scale * rng.uniform(0.92, 1.08)
        if path is not None:
            h_c *= 1.0 - 0.25 * path.degeneration
        h_c = max(h_c, 2 * 0.85 * ry_d * np.tan(np.radians(wedge / 2)) + 2.5)
        d_centre = lower.endplate(True) + 0.5 * h_c * cranial(disc_tilt)
        h_scaled = h * scale * rng.uniform(0.96, 1.04)
        centre = d_centre + 0.5 * h_c * cranial(disc_tilt) + 0.5 * h_scaled * cranial(tilt)
        ry = 0.5 * depth * scale * rng.uniform(0.96, 1.04)
        vert = Vertebra(name, spider_vertebra_label(name), Frame(centre, tilt), h_scaled, ry,
                        0.5 * width * scale * rng.uniform(0.96, 1.04), kind,
                        -(ry + E_ANT + sac_half_ap))
        disc = Disc(level, spider_disc_label(level), Frame(d_centre, disc_tilt),
                    lower, vert, h_c, 0.5 * (lower.rx + vert.rx), ry_d, path)
        disc.height_anterior = disc.height_at(0.85 * ry_d)
        disc.height_posterior = disc.height_at(-0.85 * ry_d)
        vertebrae.append(vert)
        discs.append(disc)
        lower = vert

    canal_pts = []
    for vert in vertebrae:
        canal_pts.append(vert.frame.to_lps(0.0, vert.canal_v, 0.0))
    for disc in discs:
        canal_pts.append(disc.frame.to_lps(0.0, -(disc.ry + E_ANT + sac_half_ap), 0.0))
    canal_pts_arr = np.array(sorted(canal_pts, key=lambda p: p[2]))
    canal = CurveCoords(canal_pts_arr)
    fit = np.polyfit(canal_pts_arr[:, 2], canal_pts_arr[:, 1], 2)
    zs = np.linspace(canal_pts_arr[0, 2], canal_pts_arr[-1, 2], 12)
    body = CurveCoords(np.stack([np.zeros_like(zs), np.polyval(fit, zs), zs], 1))

    habitus = Habitus(
        skin_posterior=rng.uniform(70.0, 105.0), fat=rng.uniform(8.0, 32.0),
        body_ap=rng.uniform(230.0, 300.0), half_width=rng.uniform(140.0, 175.0),
    )
    top_vertebra = "T11" if transitional else str(rng.choice(["T11", "T12", "L1"],
                                                             p=[0.3, 0.4, 0.3]))
    anatomy = Anatomy(vertebrae, discs, canal, body, sac_half_width, sac_half_ap, habitus,
                      grades, transitional, top_vertebra)
    graded = [d for d in discs if d.pathology is not None]
    anatomy.bump_s = np.array([canal.project(d.centre) for d in graded])
    anatomy.bump_bulge = np.array([d.pathology.bulge_mm for d in graded])  # type: ignore[union-attr]
    anatomy.bump_flavum = np.array([d.pathology.flavum_mm for d in graded])  # type: ignore[union-attr]
    l1, s1 = anatomy.vertebra("L1"), anatomy.vertebra("S1")
    anatomy.conus_s = canal.project(l1.endplate(False)) + rng.uniform(-8.0, 8.0)
    anatomy.sac_end_s = canal.project(s1.centre) - rng.uniform(15.0, 30.0)
    _draw_marrow(anatomy, np.random.default_rng(rng.integers(2**32)))
    return anatomy


def _draw_marrow(anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Haemangiomas (fatty, bright on T1 and T2) and Modic endplate changes beside
    degenerated discs, so marrow is not uniformly grey."""
    below = {d.upper.name: d.degeneration for d in anatomy.discs if d.pathology}
    above = {d.lower.name: d.degeneration for d in anatomy.discs if d.pathology}
    for vert in anatomy.vertebrae:
        if vert.kind == "sacral":
            continue
        if rng.random() < 0.12:
            r = rng.uniform(3.0, 7.0)
            centre = (rng.uniform(-0.5, 0.5) * vert.rx, rng.uniform(-0.4, 0.4) * vert.ry,
                      rng.uniform(-0.3, 0.3) * vert.height)
            vert.lesions.append(("fatty", centre, float(r)))
        modic = []
        for degen in (below.get(vert.name, 0.0), above.get(vert.name, 0.0)):
            u = rng.random()
            modic.append(0 if degen < 0.6 or u > 0.6 else (1 if u < 0.25 else 2))
        vert.modic = (modic[0], modic[1])


def foramen_centre(disc: Disc, side_sign: float, sac_half_width: float) -> np.ndarray:
    """Centre of the perineural fat of the exiting root beside a disc (upper foramen)."""
    return disc.frame.to_lps(side_sign * (sac_half_width + 8.0), -(disc.ry + 5.5),
                             0.5 * disc.height + 3.0)


def subarticular_centre(disc: Disc, side_sign: float, sac_half_width: float,
                        sac_half_ap: float) -> np.ndarray:
    """Lateral recess at the disc level: the anterolateral corner of the thecal sac, where
    the traversing root runs and where facet and flavum overgrowth encroach first."""
    return disc.frame.to_lps(side_sign * (sac_half_width * 0.7),
                             -(disc.ry + E_ANT + 0.55 * sac_half_ap), 0.0)
