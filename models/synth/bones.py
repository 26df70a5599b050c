"""Vertebral bodies, posterior elements, sacrum and discs as painters in their own frames.

Shapes are rounded boxes and (super)ellipsoids evaluated on local coordinates, which keeps
every oblique sampling exact and lets a cortex shell follow from the same distance value.
Each part is its own structure with a tight bounding sphere, so a slice only evaluates the
parts it actually cuts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .anatomy import ENDPLATE_CONCAVITY_MM, Anatomy, Disc, Vertebra
from .tissues import (
    ARCH,
    CORTEX,
    DISC_BASE,
    FATTY,
    MARROW,
    OEDEMA,
    Samples,
    Structure,
    ellipsoid,
    put,
)

LocalPainter = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


def _body_sd(x: np.ndarray, v: np.ndarray, w: np.ndarray, rx: float, ry: float,
             half_h: float, round_mm: float = 2.5) -> np.ndarray:
    """Approximate signed distance (mm) to a vertebral body: kidney-ish axial outline with a
    flatter posterior wall, a slight waist, rounded rims and slightly concave endplates."""
    waist = 1.0 - 0.07 * np.clip(1.0 - (w / half_h) ** 2, 0.0, 1.0)
    ax = x / (rx * waist)
    av = v / (ry * waist)
    ax2, av2 = ax * ax, av * av
    ax3, av3 = ax2 * np.abs(ax), av2 * np.abs(av)
    e = np.where(v >= 0, np.cbrt(ax3 + av3), np.sqrt(np.sqrt(ax2 * ax2 + av2 * av2)))
    qa = (e - 1.0) * ry + round_mm
    qw = np.abs(w) - half_h + ENDPLATE_CONCAVITY_MM * np.clip(1.0 - e * e, 0.0, 1.0) + round_mm
    outside = np.sqrt(np.maximum(qa, 0) ** 2 + np.maximum(qw, 0) ** 2)
    return outside + np.minimum(np.maximum(qa, qw), 0) - round_mm


def _bone(tissue: np.ndarray, label: np.ndarray, inside: np.ndarray, shell: np.ndarray,
          lab: int, marrow: int = ARCH) -> None:
    put(tissue, label, inside, marrow, lab)
    put(tissue, label, inside & shell, CORTEX, lab)


def _part(vert: Vertebra, name: str, centre: tuple[float, float, float], radius: float,
          fn: LocalPainter) -> Structure:
    frame = vert.frame

    def paint(smp: Samples, tissue: np.ndarray, label: np.ndarray) -> None:
        x, v, w = frame.local(smp.px, smp.py, smp.pz)
        fn(x, v, w, tissue, label)

    return Structure(f"{vert.name} {name}", frame.to_lps(*centre), radius, paint)


def _ellipsoid_part(vert: Vertebra, name: str, centre: tuple[float, float, float],
                    axes: tuple[float, float, float], shell: float = 0.75,
                    power: float = 2.0) -> Structure:
    lab = vert.label

    def fn(x: np.ndarray, v: np.ndarray, w: np.ndarray, tissue: np.ndarray,
           label: np.ndarray) -> None:
        q = ellipsoid(x, v, w, centre, axes, power)
        _bone(tissue, label, q < 1, q > shell, lab)

    return _part(vert, name, centre, float(np.linalg.norm(axes)) + 1.0, fn)


def _vertebra_parts(vert: Vertebra, sac_w: float, sac_ap: float, tp_len: float,
                    spurs: tuple[float, float] = (0.0, 0.0)) -> list[Structure]:
    """Body, arch and processes; ``spurs`` (mm) are anterior osteophytes at the (lower,
    upper) endplate rims, grown where the neighbouring disc has degenerated."""
    h2 = 0.5 * vert.height
    bx, bv = sac_w + 3.5, sac_ap + 3.5  # bony canal half width / half AP
    cv = vert.canal_v
    lab = vert.label
    thoracic = vert.kind == "thoracic"
    sp_len = 32.0 if thoracic else 27.0
    sp_drop = 0.75 if thoracic else 0.1

    def body(x: np.ndarray, v: np.ndarray, w: np.ndarray, tissue: np.ndarray,
             label: np.ndarray) -> None:
        sd = _body_sd(x, v, w, vert.rx, vert.ry, h2)
        _bone(tissue, label, sd < 0, sd > -1.0, lab, MARROW)
        core = sd < -1.0
        for kind, centre, radius in vert.lesions:
            q = ellipsoid(x, v, w, centre, (radius, radius, radius))
            put(tissue, label, core & (q < 1), FATTY if kind == "fatty" else OEDEMA, None)
        for sign, modic in ((-1.0, vert.modic[0]), (1.0, vert.modic[1])):
            if modic:
                band = core & (sign * w > h2 - 5.0) & (np.abs(v) < 0.8 * vert.ry)
                put(tissue, label, band, OEDEMA if modic == 1 else FATTY, None)

    def lamina(x: np.ndarray, v: np.ndarray, w: np.ndarray, tissue: np.ndarray,
               label: np.ndarray) -> None:
        vc = v - cv
        r_in = np.sqrt((x / bx) ** 2 + (vc / bv) ** 2)
        r_out = np.sqrt((x / (bx + 6.5)) ** 2 + (vc / (bv + 5.0)) ** 2)
        wc = -0.2 * vert.height + 0.25 * vc  # shingled: lower edge further back
        inside = (r_in > 1) & (r_out < 1) & (vc < 1.0) & (np.abs(w - wc) < 0.45 * vert.height)
        _bone(tissue, label, inside, (r_in < 1.12) | (r_out > 0.9), lab)

    def spinous(x: np.ndarray, v: np.ndarray, w: np.ndarray, tissue: np.ndarray,
                label: np.ndarray) -> None:
        t = (-(v - cv) - (bv + 2.0)) / sp_len
        tc = np.clip(t, 0.0, 1.0)
        wc = -0.18 * vert.height - sp_drop * tc * sp_len
        half = (0.40 - 0.06 * tc) * vert.height
        tip = np.clip((t - 0.85) / 0.15, 0.0, 1.0)  # slightly rounded posterior tip
        half = half * np.sqrt(np.clip(1.0 - tip * tip, 0.0, 1.0)) + 0.1
        xw = 3.6 + 1.6 * tc
        inside = (t > -0.4) & (t < 1.0) & (np.abs(x) < xw) & (np.abs(w - wc) < half)
        edge = (np.abs(x) > xw - 0.7) | (t > 0.97) | (np.abs(w - wc) > half - 0.8)
        _bone(tissue, label, inside, edge, lab)

    ped_len = 0.5 * (-vert.ry + 2.0 - cv)
    ped_v = -vert.ry + 2.0 - ped_len
    parts = [
        _part(vert, "body", (0.0, 0.0, 0.0), float(np.hypot(vert.rx + 2, h2 + 2)), body),
        _part(vert, "lamina", (0.0, cv - bv, -0.2 * vert.height),
              float(np.hypot(bx + 7, bv + 6) + h2), lamina),
        _part(vert, "spinous process", (0.0, cv - bv - 0.5 * sp_len,
                                        -0.18 * vert.height - 0.5 * sp_drop * sp_len),
              0.5 * sp_len + 0.4 * vert.height + 8.0, spinous),
    ]
    for size, sign, where in ((spurs[0], -1.0, "lower"), (spurs[1], 1.0, "upper")):
        if size > 0.3:
            parts.append(_ellipsoid_part(
                vert, f"osteophyte {where}", (0.0, vert.ry + 0.3 * size, sign * (h2 - 1.5)),
                (0.55 * vert.rx, 0.8 * size + 0.8, 1.2 + 0.5 * size), shell=0.7))
    tl = 16.0 if thoracic else tp_len
    for side in (-1.0, 1.0):
        sname = "left" if side > 0 else "right"
        parts += [
            _ellipsoid_part(vert, f"pedicle {sname}", (side * (bx + 3.0), ped_v,
                                                       0.18 * vert.height),
                            (4.2, ped_len + 1.0, 6.5), shell=0.7),
            _ellipsoid_part(vert, f"transverse process {sname}",
                            (side * (bx + 3.0 + 0.5 * tl), cv + 2.0, 0.12 * vert.height),
                            (0.5 * tl + 1.5, 4.0, 4.5), shell=0.7),
            _ellipsoid_part(vert, f"superior articular process {sname}",
                            (side * (bx + 3.5), cv - (bv - 3.0), h2 + 2.5), (5.5, 6.5, 10.0)),
            _ellipsoid_part(vert, f"inferior articular process {sname}",
                            (side * (bx + 1.5), cv - (bv + 5.5), -h2 - 3.5), (5.0, 6.0, 10.0)),
        ]
        if thoracic:  # rib heads tell a thoracic vertebra from a lumbar-type one
            parts.append(_ellipsoid_part(vert, f"rib head {sname}",
                                         (side * (vert.rx + 3.0), -0.75 * vert.ry,
                                          0.3 * vert.height), (8.0, 5.5, 5.5)))
    return parts


def _sacral_parts(vert: Vertebra, sac_w: float, sac_ap: float) -> list[Structure]:
    h2 = 0.5 * vert.height
    scale = vert.ry / 16.5
    bx, bv = (sac_w + 2.0) * scale, (sac_ap * 0.8 + 2.5) * scale
    cv = vert.canal_v
    lab = vert.label

    def body(x: np.ndarray, v: np.ndarray, w: np.ndarray, tissue: np.ndarray,
             label: np.ndarray) -> None:
        sd = _body_sd(x, v, w, vert.rx, vert.ry, h2 + 0.6, round_mm=1.5)
        _bone(tissue, label, sd < 0, sd > -1.2, lab, MARROW)

    def wall(x: np.ndarray, v: np.ndarray, w: np.ndarray, tissue: np.ndarray,
             label: np.ndarray) -> None:
        vc = v - cv
        r_in = np.sqrt((x / bx) ** 2 + (vc / bv) ** 2)
        r_out = np.sqrt((x / (bx + 7.0 * scale)) ** 2 + (vc / (bv + 6.0 * scale)) ** 2)
        inside = (r_in > 1) & (r_out < 1) & (np.abs(w) < h2 + 0.6) & (vc < 2.0)
        _bone(tissue, label, inside, (r_in < 1.12) | (r_out > 0.9), lab)
        crest = (np.abs(x) < 3.0) & (vc < -bv) & (vc > -(bv + 13.0 * scale)) & (
            np.abs(w) < 0.35 * h2 + 3)
        _bone(tissue, label, crest, np.abs(x) > 2.0, lab)

    parts = [
        _part(vert, "body", (0.0, 0.0, 0.0), float(np.hypot(vert.rx + 2, h2 + 2)), body),
        _part(vert, "posterior wall", (0.0, cv - bv, 0.0),
              float(np.hypot(bx + 8 * scale, bv + 14 * scale) + h2), wall),
    ]
    for side in (-1.0, 1.0):
        parts.append(_ellipsoid_part(
            vert, "ala left" if side > 0 else "ala right",
            (side * (vert.rx * 0.95 + 8.0 * scale), -0.2 * vert.ry, 0.0),
            (vert.rx * 0.75, vert.ry * 1.05, h2 + 0.8), shell=0.9, power=4.0))
    return parts


def disc_tissues(index: int) -> tuple[int, int, int]:
    """(annulus, inner annulus, nucleus) tissue ids of disc ``index`` (caudal first)."""
    base = DISC_BASE + 3 * index
    return base, base + 1, base + 2


def _disc_painter(disc: Disc, index: int) -> Callable[[Samples, np.ndarray, np.ndarray], None]:
    annulus, inner, nucleus = disc_tissues(index)
    lo, up = disc.lower, disc.upper
    lo_pt = lo.endplate(True).astype(np.float32)
    up_pt = up.endplate(False).astype(np.float32)
    lo_n = lo.frame.axes[2].astype(np.float32)
    up_n = up.frame.axes[2].astype(np.float32)
    bulge = disc.bulge
    h2 = 0.5 * disc.height
    cleft = disc.degeneration < 0.75

    def paint(smp: Samples, tissue: np.ndarray, label: np.ndarray) -> None:
        above = smp.dot(lo_pt, lo_n)
        below = smp.dot(up_pt, up_n)
        between = (above > -1.0) & (below < 1.0)
        if not between.any():
            return
        x, v, w = disc.frame.local(smp.px, smp.py, smp.pz)
        prof = np.clip(1.0 - (w / max(h2, 1.0)) ** 2, 0.0, 1.0)
        ry = np.where(v >= 0, disc.ry + 1.2 * prof, disc.ry + 0.6 + bulge * prof)
        rx = disc.rx + (0.8 + 0.4 * bulge) * prof
        ax2, av2 = (x / rx) ** 2, (v / ry) ** 2
        e = np.where(v >= 0, np.sqrt(ax2 + av2), np.sqrt(np.sqrt(ax2 * ax2 + av2 * av2)))
        inside = between & (e < 1)
        put(tissue, label, inside, annulus, disc.label)
        q = ellipsoid(x, v, w, (0.0, -0.1 * disc.ry, 0.0),
                      (0.62 * disc.rx, 0.56 * disc.ry, 0.36 * disc.height))
        put(tissue, label, inside & (q < 1.25), inner, disc.label)
        nuc = inside & (q < 1)
        if cleft:
            nuc &= np.abs(w) > 0.45
        put(tissue, label, nuc, nucleus, disc.label)

    return paint


def bone_structures(anatomy: Anatomy) -> list[Structure]:
    """Discs first, then vertebrae: a body's endplate wins over a disc's rounded rim."""
    out: list[Structure] = []
    for i, disc in enumerate(anatomy.discs):
        r = float(np.hypot(disc.rx + 6.0, disc.height + 8.0))
        out.append(Structure(f"disc {disc.level}", disc.centre, r, _disc_painter(disc, i)))
    sw, sa = anatomy.sac_half_width, anatomy.sac_half_ap
    for vert in anatomy.vertebrae:
        if vert.kind == "sacral":
            out += _sacral_parts(vert, sw, sa)
            continue
        tp = {"L3": 26.0, "L5": 30.0}.get(vert.name, 22.0)
        if anatomy.transitional and vert.name == "L5":
            tp = 38.0
        degen = {d.upper.name: d.degeneration for d in anatomy.discs if d.pathology}
        degen_up = {d.lower.name: d.degeneration for d in anatomy.discs if d.pathology}
        spurs = (max(0.0, 7.0 * (degen.get(vert.name, 0.0) - 0.55)),
                 max(0.0, 7.0 * (degen_up.get(vert.name, 0.0) - 0.55)))
        out += _vertebra_parts(vert, sw, sa, tp, spurs)
    return out
