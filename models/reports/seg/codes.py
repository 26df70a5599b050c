"""Coded concepts and display colours of the segments, keyed by SPIDER label value.

Codes are SNOMED CT concepts from CID 7151/7602-7604 as listed in pydicom's concept
dictionary (looked up there by keyword, not typed in). Every vertebra and disc the level
labelling names is a segment, thoracic ones included: a reader checks the level count
against the whole spine in view, and a SEG that stopped at L1 would hide the vertebrae the
count started from or ended at. A vertebra cut by the field of view is its own segment
"<name> vertebra (partial)" with the same code. Colours are chosen so that neighbouring
structures differ (vertebrae warm, discs cool, canal yellow); viewers get them as CIELab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from lumbar_common.vocabulary import SPIDER_CANAL, SPIDER_PARTIAL_OFFSET, SPIDER_SACRUM
from models.levels import (
    DISCS_FROM_SACRUM,
    VERTEBRAE_FROM_SACRUM,
    disc_label,
    vertebra_label,
)

#: Segmented property category of every segment (CID 7150).
ANATOMICAL_STRUCTURE: Final[Code] = codes.SCT.AnatomicalStructure


@dataclass(frozen=True)
class SegmentKind:
    """What one SPIDER label value becomes in a SEG."""

    label_value: int
    label: str
    property_type: Code
    rgb: tuple[int, int, int]
    #: "vertebra", "sacrum", "disc" or "canal"
    kind: str = ""


_LUMBAR_RGB: Final = {
    "L1": (230, 25, 75),
    "L2": (245, 130, 48),
    "L3": (210, 180, 40),
    "L4": (60, 180, 75),
    "L5": (240, 50, 230),
}
#: thoracic vertebrae alternate between two warm colours distinct from the lumbar ones
_THORACIC_RGB: Final = ((250, 190, 150), (200, 120, 120))
_LUMBAR_DISC_RGB: Final = {
    "L1-L2": (0, 130, 200),
    "L2-L3": (70, 240, 240),
    "L3-L4": (0, 90, 255),
    "L4-L5": (145, 30, 180),
    "L5-S1": (0, 200, 160),
}
_THORACIC_DISC_RGB: Final = ((120, 160, 230), (90, 200, 200))


def _vertebra_code(name: str) -> Code:
    return getattr(codes.SCT, f"{name}Vertebra")


def _disc_code(level: str) -> Code:
    return getattr(codes.SCT, level.replace("-", "") + "Disc")


def _vertebra_rgb(name: str) -> tuple[int, int, int]:
    if name in _LUMBAR_RGB:
        return _LUMBAR_RGB[name]
    return _THORACIC_RGB[int(name[1:]) % 2]


def _disc_rgb(level: str) -> tuple[int, int, int]:
    if level in _LUMBAR_DISC_RGB:
        return _LUMBAR_DISC_RGB[level]
    return _THORACIC_DISC_RGB[int(level.split("-")[0][1:]) % 2]


def _kinds() -> tuple[SegmentKind, ...]:
    cranial_first = VERTEBRAE_FROM_SACRUM[::-1]
    vertebrae = []
    for name in cranial_first:
        code, rgb, value = _vertebra_code(name), _vertebra_rgb(name), vertebra_label(name)
        vertebrae.append(SegmentKind(value, f"{name} vertebra", code, rgb, "vertebra"))
        vertebrae.append(
            SegmentKind(
                value + SPIDER_PARTIAL_OFFSET,
                f"{name} vertebra (partial)",
                code,
                rgb,
                "vertebra",
            )
        )
    discs = [
        SegmentKind(
            disc_label(level),
            f"{level.replace('-', '/')} disc",
            _disc_code(level),
            _disc_rgb(level),
            "disc",
        )
        for level in DISCS_FROM_SACRUM[::-1]
    ]
    return (
        *vertebrae,
        SegmentKind(SPIDER_SACRUM, "Sacrum", codes.SCT.Sacrum, (170, 110, 40), "sacrum"),
        *discs,
        SegmentKind(
            SPIDER_CANAL, "Spinal canal", codes.SCT.VertebralCanal, (255, 225, 25), "canal"
        ),
    )


#: Segments in the order they are numbered in every SEG (segment number = position + 1
#: among the structures present): vertebrae cranial to caudal, sacrum, discs cranial to
#: caudal, canal.
SEGMENT_KINDS: Final[tuple[SegmentKind, ...]] = _kinds()
KIND_BY_LABEL: Final[dict[int, SegmentKind]] = {k.label_value: k for k in SEGMENT_KINDS}
assert len(KIND_BY_LABEL) == len(SEGMENT_KINDS)
