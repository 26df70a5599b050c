"""Soft tissues: body wall, muscles, vessels, the canal and its contents, foramina.

Tube-like tissues follow the spine through curve coordinates; the thecal sac narrows at a
disc by exactly the disc bulge (from the front) plus the ligamentum flavum thickening (from
behind) that the level's canal grade asked for, so its AP diameter equals the truth value.
"""

from __future__ import annotations

import numpy as np

from lumbar_common.vocabulary import LEVELS, SPIDER_CANAL

from .anatomy import E_ANT, Anatomy, Disc, foramen_centre
from .pathology import FAT_MARGIN_MM
from .tissues import (
    AIR,
    CSF,
    EPIFAT,
    FAT,
    LIGAMENT,
    MUSCLE,
    NERVE,
    SKIN,
    VESSEL,
    VISCERA,
    Samples,
    Structure,
    ellipsoid,
    put,
)


def _background_painter(anatomy: Anatomy):
    """Body wall, back muscles, psoas, great vessels; on the slice's centre plane only (the
    body wall is smooth, so partial volume would not show)."""
    hab = anatomy.habitus
    half_ap = 0.5 * hab.body_ap
    centre_v = -hab.skin_posterior + half_ap
    sa = anatomy.sac_half_ap
    canal = anatomy.canal
    s_l1 = canal.project(anatomy.vertebra("L1").endplate(True))
    s_l5 = canal.project(anatomy.vertebra("L5").centre)
    s_l4 = canal.project(anatomy.vertebra("L4").centre)
    ry = anatomy.vertebra("L3").ry
    rx = anatomy.vertebra("L3").rx
    front = sa + E_ANT + 2 * ry

    def paint(smp: Samples, tissue: np.ndarray, label: np.ndarray) -> None:
        mid = smp.px.shape[0] // 2
        x, vb, s = smp.px[mid], smp.bv[0], smp.bs[0]
        out = np.full(x.shape, VISCERA, np.uint8)
        r = np.sqrt((x / hab.half_width) ** 2 + ((vb - centre_v) / half_ap) ** 2)
        depth = (1 - r) * half_ap
        # retroperitoneum: fat behind the bowel, curving back towards the flanks
        out[vb < front + 2.0 - 0.005 * x * x] = FAT
        # abdominal wall muscles just inside the subcutaneous fat, front and flanks
        out[(depth < hab.fat + 9.0) & (vb > -10.0)] = MUSCLE
        # behind the vertebral bodies: paraspinal muscles and quadratus lumborum, an oval
        # compartment; fat of the flanks beyond it
        ax_ = np.abs(x)
        half_c = 0.5 * (hab.skin_posterior + front) + 1.0
        comp = (ax_ / 82.0) ** 2 + ((vb - (front + 2.0 - half_c)) / half_c) ** 2 < 1
        out[comp] = MUSCLE
        grow = np.clip((s_l1 - s) / max(s_l1 - s_l5, 1.0), 0.3, 1.1)
        psoas = (((ax_ - (rx + 10.0 + 6.0 * grow)) / (13.0 * grow + 4.0)) ** 2
                 + ((vb - (sa + E_ANT + 1.2 * ry)) / (10.0 * grow + 4.0)) ** 2) < 1
        out[psoas] = MUSCLE
        aorta = ((x - 12.0) ** 2 + (vb - front - 13.0) ** 2 < 10.0**2) & (s > s_l4)
        ivc = ((x + 17.0) ** 2 + (vb - front - 12.0) ** 2 < 11.0**2) & (s > s_l5)
        out[aorta | ivc] = VESSEL
        out[depth < hab.fat * np.where(vb > 0, 0.8, 1.0)] = FAT
        out[depth < 1.8] = SKIN
        out[r >= 1] = AIR
        tissue[:] = out[None]

    return paint


def _canal_select(anatomy: Anatomy, smp: Samples, margin: float
                  ) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Indices of samples near the canal and their (x, v, s): the canal is a few percent of
    a slice, so the narrow tests run on those points only."""
    x = smp.px
    near = (np.abs(x) < anatomy.sac_half_width + margin) & (
        np.abs(smp.cv) < anatomy.sac_half_ap + margin)
    idx = np.nonzero(near)
    return idx, x[idx], smp.cv[idx], smp.cs[idx]


def _canal_painter(anatomy: Anatomy):
    sw, sa = anatomy.sac_half_width, anatomy.sac_half_ap
    bx, bv = sw + 3.5, sa + 3.5

    def paint(smp: Samples, tissue: np.ndarray, label: np.ndarray) -> None:
        idx, x, v, s = _canal_select(anatomy, smp, 3.6)
        if not len(x):
            return
        b, f = anatomy.stenosis(s)
        r = np.sqrt((x / bx) ** 2 + (v / bv) ** 2)
        t = np.where(r < 1, EPIFAT, tissue[idx])
        t = np.where((r < 1) & (v > sa - b + 0.2), LIGAMENT, t)  # posterior longitudinal lig.
        flav = (r < 1) & (v < -2.0) & (r > (sa - f + 0.4) / bv) & (np.abs(x) > 1.5)
        t = np.where(flav, LIGAMENT, t)
        tissue[idx] = t
        label[idx] = np.where(r < 1, 0, label[idx])

    return paint


def _sac_painter(anatomy: Anatomy):
    sw, sa = anatomy.sac_half_width, anatomy.sac_half_ap
    end, conus = anatomy.sac_end_s, anatomy.conus_s
    # cauda equina: roots lying dorsally (patient supine), each leaving at its own level
    exits = sorted((anatomy.canal.project(anatomy.disc(lv).centre) for lv in LEVELS),
                   reverse=True)
    roots = []
    for k, s_exit in enumerate(exits + [end - 20.0]):
        for side in (-1.0, 1.0):
            roots.append((side * (1.5 + 1.3 * (len(exits) - k)), -0.25 - 0.08 * k, s_exit))

    def paint(smp: Samples, tissue: np.ndarray, label: np.ndarray) -> None:
        idx, x, v, s = _canal_select(anatomy, smp, 0.5)
        if not len(x):
            return
        b, f = anatomy.stenosis(s)
        half = sa - 0.5 * (b + f)
        centre = 0.5 * (f - b)
        taper = np.sqrt(np.clip((s - end) / 18.0, 0.0, 1.0))
        width = sw * (1.0 - 0.15 * (b + f) / (2 * sa)) * taper
        sac = ((x / np.maximum(width, 1e-3)) ** 2
               + ((v - centre) / np.maximum(half * taper, 1e-3)) ** 2) < 1
        t = np.where(sac, CSF, tissue[idx])
        cord_r = 4.2 * np.sqrt(np.clip((s - conus) / 15.0, 0.0, 1.0))
        nerve = x**2 + (v - centre) ** 2 < cord_r**2
        for rx_, rv, s_exit in roots:
            nerve |= (s < conus) & (s > s_exit) & (
                (x - rx_) ** 2 + (v - centre - rv * half) ** 2 < 0.85**2)
        tissue[idx] = np.where(sac & nerve, NERVE, t)
        label[idx] = np.where(sac, SPIDER_CANAL, label[idx])

    return paint


def _foramen_painter(disc: Disc, side: float, lss: int, sw: float):
    centre = foramen_centre(disc, side, sw)
    axes = disc.frame.axes
    d = side * axes[0] + 0.35 * axes[1] - 0.55 * axes[2]
    d /= np.linalg.norm(d)
    margin = FAT_MARGIN_MM[lss]
    root_r = 2.3 if lss < 3 else 1.7
    c32 = centre.astype(np.float32)
    d32 = d.astype(np.float32)
    ax_v = axes[1].astype(np.float32)
    ax_w = axes[2].astype(np.float32)
    dv, dw = np.float32(d32 @ ax_v), np.float32(d32 @ ax_w)

    def paint(smp: Samples, tissue: np.ndarray, label: np.ndarray) -> None:
        t = smp.dot(c32, d32)
        pv = smp.dot(c32, ax_v) - t * dv
        pw = smp.dot(c32, ax_w) - t * dw
        zone = (np.abs(t) < 7.0) & ((pv / 6.5) ** 2 + (pw / 9.5) ** 2 < 1)
        put(tissue, label, zone, LIGAMENT, 0)
        fat = (np.abs(t) < 6.0) & ((pv / (root_r + margin)) ** 2
                                   + (pw / (root_r + 1.8 * margin)) ** 2 < 1)
        put(tissue, label, fat, EPIFAT, 0)
        root = (t > -9.0) & (t < 30.0) & ((pv / root_r) ** 2 + (pw / (root_r * 1.1)) ** 2 < 1)
        put(tissue, label, root, NERVE, 0)

    return centre, paint


def _recess_painter(disc: Disc, side: float, amount: float, sw: float, sa: float):
    """Facet and flavum overgrowth into the lateral recess, growing medially with the grade."""
    centre_local = (side * (sw + 5.0), -(disc.ry + E_ANT + 0.9 * sa), 0.0)
    axes = (5.0 + 6.5 * amount, 5.0 + 3.0 * amount, 8.0)

    def paint(smp: Samples, tissue: np.ndarray, label: np.ndarray) -> None:
        x, v, w = disc.frame.local(smp.px, smp.py, smp.pz)
        q = ellipsoid(x, v, w, centre_local, axes)
        soft = (tissue == CSF) | (tissue == EPIFAT) | (tissue == NERVE) | (tissue == LIGAMENT)
        put(tissue, label, (q < 1) & soft, LIGAMENT, 0)

    return disc.frame.to_lps(*centre_local), paint


def soft_structures(anatomy: Anatomy, stage: str) -> list[Structure]:
    """Structures painted before the bones (``"under"``) or after them (``"over"``)."""
    inf = float("inf")
    zero = np.zeros(3)
    if stage == "under":
        return [Structure("body wall", zero, inf, _background_painter(anatomy)),
                Structure("bony canal", zero, inf, _canal_painter(anatomy))]
    out = [Structure("thecal sac", zero, inf, _sac_painter(anatomy))]
    sw, sa = anatomy.sac_half_width, anatomy.sac_half_ap
    for disc in anatomy.discs:
        path = disc.pathology
        for side_name, side in (("left", 1.0), ("right", -1.0)):
            lss = path.lss[side_name] if path else 0
            centre, paint = _foramen_painter(disc, side, lss, sw)
            out.append(Structure(f"foramen {disc.level} {side_name}", centre, 32.0, paint))
            if path is not None:
                centre, paint = _recess_painter(disc, side, path.recess[side_name], sw, sa)
                out.append(Structure(f"recess {disc.level} {side_name}", centre, 16.0, paint))
    return out
