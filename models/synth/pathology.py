"""Stenosis grades per level and side, and the shape changes that produce them.

Grades are the cause, shapes the effect: a grade is drawn (or given), then turned into a
canal AP diameter, perineural fat margin and lateral-recess encroachment inside the grade's
band, so that a measurement on the images lands back on the grade.

Canal thresholds (AP diameter of the thecal sac at the disc, midline, perpendicular to the
canal axis): Normal/Mild >= 10 mm, Moderate 7-10 mm, Severe < 7 mm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lumbar_common.vocabulary import (
    CANAL,
    FORAMEN,
    GRADES,
    LEVELS,
    SIDES,
    SUBARTICULAR,
    finding_keys,
    lss_to_rsna,
    parse_rsna_key,
    rsna_key,
)

CANAL_NORMAL_MIN_MM = 10.0
CANAL_SEVERE_MAX_MM = 7.0
#: perineural fat margin around the exiting root (mm) per LSS grade 0..3
FAT_MARGIN_MM = (3.0, 1.8, 0.7, 0.0)

#: (P(Moderate), P(Severe)) per level for each condition in the random draw: lower levels
#: are more often affected, as in the RSNA 2024 training data.
_PREVALENCE = {
    CANAL: ((0.05, 0.02), (0.08, 0.04), (0.13, 0.07), (0.22, 0.14), (0.12, 0.06)),
    FORAMEN: ((0.04, 0.01), (0.07, 0.02), (0.13, 0.04), (0.22, 0.08), (0.25, 0.12)),
    SUBARTICULAR: ((0.06, 0.02), (0.10, 0.04), (0.15, 0.08), (0.24, 0.14), (0.18, 0.08)),
}


def parse_grades(spec: str) -> dict[str, str]:
    """``key=Grade,key=Grade`` or the path of a JSON object into a validated mapping.

    The special key ``default`` sets the grade of every finding not named.
    """
    path = Path(spec)
    if spec.strip().endswith(".json") or path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read grades file {spec!r}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"grades file {spec!r} must hold a JSON object")
        return validate_grades({str(k): str(v) for k, v in data.items()})
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in item:
            raise ValueError(f"grade {item!r} is not key=Grade")
        key, grade = (p.strip() for p in item.split("=", 1))
        out[key] = grade
    return validate_grades(out)


def validate_grades(grades: dict[str, str]) -> dict[str, str]:
    for key, grade in grades.items():
        if key != "default":
            parse_rsna_key(key)  # raises ValueError naming the key
        if grade not in GRADES:
            raise ValueError(f"grade {grade!r} for {key!r} is not one of {GRADES}")
    return dict(grades)


def draw_grades(rng: np.random.Generator, given: dict[str, str] | None) -> dict[str, str]:
    """All 25 RSNA grades: the given ones, the rest drawn with realistic prevalence.

    A per-patient degeneration factor correlates levels, so some patients are
    multilevel-stenotic and most are nearly normal, but every grade appears often enough
    for training.
    """
    given = validate_grades(given or {})
    severity = float(rng.choice([0.5, 1.0, 2.2], p=[0.45, 0.35, 0.20]))
    out: dict[str, str] = {}
    for condition, side, level in finding_keys():
        key = rsna_key(condition, side, level)
        p_mod, p_sev = _PREVALENCE[condition][LEVELS.index(level)]
        u = rng.random()  # always drawn so given grades do not shift the other draws
        if key in given:
            out[key] = given[key]
        elif "default" in given:
            out[key] = given["default"]
        else:
            p_sev, p_mod = min(p_sev * severity, 0.45), min(p_mod * severity, 0.45)
            out[key] = GRADES[2] if u < p_sev else GRADES[1] if u < p_sev + p_mod else GRADES[0]
    return out


@dataclass(frozen=True)
class LevelPathology:
    """Shape parameters of one disc level derived from its grades."""

    canal_ap_mm: float
    bulge_mm: float
    flavum_mm: float
    degeneration: float
    lss: dict[str, int]
    recess: dict[str, float]


def level_pathology(
    rng: np.random.Generator, grades: dict[str, str], level: str, sac_ap_mm: float
) -> LevelPathology:
    """Canal AP, bulge/flavum split, disc degeneration, LSS grades and recess encroachment."""
    # a fixed number of draws per level, so changing one grade leaves the rest of the
    # patient (sizes, other levels) unchanged for the same seed
    u = rng.random(12)
    canal = grades[rsna_key(CANAL, None, level)]
    if canal == GRADES[0]:
        lo = max(CANAL_NORMAL_MIN_MM + 0.6, sac_ap_mm - 3.5)
        target = lo + u[0] * (sac_ap_mm - lo)
    elif canal == GRADES[1]:
        band = CANAL_NORMAL_MIN_MM - CANAL_SEVERE_MAX_MM - 0.8
        target = CANAL_SEVERE_MAX_MM + 0.4 + u[0] * band
    else:
        target = 3.5 + u[0] * (CANAL_SEVERE_MAX_MM - 0.6 - 3.5)
    reduction = max(sac_ap_mm - target, 0.0)
    bulge = reduction * (0.45 + 0.2 * u[1])
    lss: dict[str, int] = {}
    recess: dict[str, float] = {}
    worst = GRADES.index(canal)
    for i, side in enumerate(SIDES):
        fg = grades[rsna_key(FORAMEN, side, level)]
        lss[side] = (1 if u[2 + i] < 0.3 else 0) if fg == GRADES[0] else (
            2 if fg == GRADES[1] else 3)
        assert lss_to_rsna(lss[side]) == fg
        sg = GRADES.index(grades[rsna_key(SUBARTICULAR, side, level)])
        lo_r, hi_r = ((0.0, 0.25), (0.5, 0.65), (0.85, 1.0))[sg]
        recess[side] = lo_r + u[4 + i] * (hi_r - lo_r)
        worst = max(worst, GRADES.index(fg), sg)
    degeneration = float(np.clip(0.1 + 0.5 * u[6] + 0.3 * worst, 0.0, 1.0))
    return LevelPathology(
        canal_ap_mm=float(sac_ap_mm - reduction),
        bulge_mm=float(bulge),
        flavum_mm=float(reduction - bulge),
        degeneration=degeneration,
        lss=lss,
        recess=recess,
    )
