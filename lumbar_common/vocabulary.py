"""Levels, conditions, grades and label values: the one place that names them.

The names follow the public datasets the project is built on so that results can be
scored with their tools unchanged: RSNA 2024 (`train.csv` column names and grade strings),
the LSS foraminal dataset (grades 0-3) and SPIDER (label values in masks).
"""

from __future__ import annotations

from typing import Final, Literal

Side = Literal["left", "right"]
SIDES: Final[tuple[Side, Side]] = ("left", "right")

#: Disc levels graded at every study, cranial to caudal.
LEVELS: Final[tuple[str, ...]] = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
#: Vertebrae named by the level labelling, cranial to caudal.
VERTEBRAE: Final[tuple[str, ...]] = ("L1", "L2", "L3", "L4", "L5", "S1")

#: Conditions as RSNA names them, without the side prefix.
CANAL: Final = "spinal_canal_stenosis"
FORAMEN: Final = "neural_foraminal_narrowing"
SUBARTICULAR: Final = "subarticular_stenosis"
CONDITIONS: Final[tuple[str, ...]] = (CANAL, FORAMEN, SUBARTICULAR)

#: RSNA 2024 grade strings, in the order probabilities are given everywhere.
GRADES: Final[tuple[str, str, str]] = ("Normal/Mild", "Moderate", "Severe")
#: RSNA sample weights per grade (normal/mild 1, moderate 2, severe 4).
GRADE_WEIGHTS: Final[tuple[float, float, float]] = (1.0, 2.0, 4.0)
#: LSS foraminal grades.
LSS_GRADES: Final[tuple[str, ...]] = ("Normal", "Mild", "Moderate", "Severe")


def level_suffix(level: str) -> str:
    """RSNA column suffix of a level: ``"L4-L5"`` -> ``"l4_l5"``."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
    return level.lower().replace("-", "_")


def finding_keys() -> list[tuple[str, Side | None, str]]:
    """The 25 (condition, side, level) triples of a study, in RSNA column order."""
    keys: list[tuple[str, Side | None, str]] = []
    for condition in CONDITIONS:
        sides: tuple[Side | None, ...] = (None,) if condition == CANAL else SIDES
        for side in sides:
            for level in LEVELS:
                keys.append((condition, side, level))
    return keys


def rsna_key(condition: str, side: Side | None, level: str) -> str:
    """RSNA `train.csv` column for one finding, e.g. ``left_neural_foraminal_narrowing_l4_l5``."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")
    if (condition == CANAL) != (side is None):
        raise ValueError(f"condition {condition!r} does not take side {side!r}")
    prefix = f"{side}_" if side else ""
    return f"{prefix}{condition}_{level_suffix(level)}"


def parse_rsna_key(key: str) -> tuple[str, Side | None, str]:
    """Inverse of :func:`rsna_key`."""
    for condition, side, level in finding_keys():
        if rsna_key(condition, side, level) == key:
            return condition, side, level
    raise ValueError(f"not an RSNA finding column: {key!r}")


def lss_to_rsna(lss_grade: int) -> str:
    """LSS 0-3 foraminal grade to the RSNA 3-grade scheme (normal and mild merge)."""
    if lss_grade not in (0, 1, 2, 3):
        raise ValueError(f"LSS grade must be 0..3, got {lss_grade!r}")
    return GRADES[max(0, lss_grade - 1)]


# --- SPIDER label scheme -------------------------------------------------------------------
# Vertebrae are numbered from the bottom (L5 = 1, L4 = 2, ..., L1 = 5, T12 = 6, T11 = 7),
# partially visible vertebrae add 100, discs are 200 + the number of the vertebra above them
# counted the same way (L5-S1 = 201 ... L1-L2 = 205, T12-L1 = 206), the canal is 100.
# SPIDER has no sacrum label; the project uses 50 for it (outside every SPIDER range).
SPIDER_CANAL: Final = 100
SPIDER_SACRUM: Final = 50
SPIDER_PARTIAL_OFFSET: Final = 100
SPIDER_DISC_OFFSET: Final = 200

_VERTEBRA_FROM_BOTTOM: Final[tuple[str, ...]] = (
    "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9",
)


def spider_vertebra_label(name: str) -> int:
    """SPIDER label of a whole vertebra (``"L5"`` -> 1, ``"S1"``/sacrum -> 50)."""
    if name in ("S1", "sacrum"):
        return SPIDER_SACRUM
    if name not in _VERTEBRA_FROM_BOTTOM:
        raise ValueError(f"no SPIDER label for vertebra {name!r}")
    return _VERTEBRA_FROM_BOTTOM.index(name) + 1


def spider_disc_label(level: str) -> int:
    """SPIDER label of the disc at a level (``"L5-S1"`` -> 201, ``"T12-L1"`` -> 206)."""
    upper = level.split("-")[0]
    if upper not in _VERTEBRA_FROM_BOTTOM:
        raise ValueError(f"no SPIDER label for disc level {level!r}")
    return SPIDER_DISC_OFFSET + _VERTEBRA_FROM_BOTTOM.index(upper) + 1


def spider_label_name(value: int) -> str:
    """Human name of a SPIDER label value (inverse of the two functions above)."""
    if value == SPIDER_CANAL:
        return "spinal canal"
    if value == SPIDER_SACRUM:
        return "S1"
    if value > SPIDER_DISC_OFFSET:
        upper = _VERTEBRA_FROM_BOTTOM[value - SPIDER_DISC_OFFSET - 1]
        lower = "S1" if upper == "L5" else _next_caudal(upper)
        return f"{upper}-{lower}"
    if value > SPIDER_PARTIAL_OFFSET:
        return _VERTEBRA_FROM_BOTTOM[value - SPIDER_PARTIAL_OFFSET - 1] + " (partial)"
    if 1 <= value <= len(_VERTEBRA_FROM_BOTTOM):
        return _VERTEBRA_FROM_BOTTOM[value - 1]
    raise ValueError(f"unknown SPIDER label value {value!r}")


def _next_caudal(name: str) -> str:
    return _VERTEBRA_FROM_BOTTOM[_VERTEBRA_FROM_BOTTOM.index(name) - 1]


#: Semantic classes of the segmentation network (the real training data's scheme).
SEMANTIC_CLASSES: Final[tuple[str, ...]] = ("background", "vertebra", "disc", "canal")
