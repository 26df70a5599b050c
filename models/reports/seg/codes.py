"""Coded concepts and display colours of the segments, keyed by SPIDER label value.

Codes are SNOMED CT concepts from CID 7151/7602-7604 as listed in pydicom's concept
dictionary (checked there, not typed in). Colours are chosen so that neighbouring
structures differ (vertebrae warm, discs cool, canal yellow); viewers get them as CIELab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from lumbar_common.vocabulary import (
    LEVELS,
    SPIDER_CANAL,
    spider_disc_label,
    spider_vertebra_label,
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


_VERTEBRAE: Final = (
    ("L1", codes.SCT.L1Vertebra, (230, 25, 75)),
    ("L2", codes.SCT.L2Vertebra, (245, 130, 48)),
    ("L3", codes.SCT.L3Vertebra, (210, 180, 40)),
    ("L4", codes.SCT.L4Vertebra, (60, 180, 75)),
    ("L5", codes.SCT.L5Vertebra, (240, 50, 230)),
)
_DISCS: Final = (
    codes.SCT.L1L2Disc,
    codes.SCT.L2L3Disc,
    codes.SCT.L3L4Disc,
    codes.SCT.L4L5Disc,
    codes.SCT.L5S1Disc,
)
_DISC_RGB: Final = ((0, 130, 200), (70, 240, 240), (0, 90, 255), (145, 30, 180), (0, 200, 160))

#: Segments in the order they are numbered in every SEG (segment number = position + 1
#: among the structures present): vertebrae cranial to caudal, sacrum, discs, canal.
SEGMENT_KINDS: Final[tuple[SegmentKind, ...]] = (
    *(
        SegmentKind(spider_vertebra_label(n), f"{n} vertebra", code, rgb)
        for n, code, rgb in _VERTEBRAE
    ),
    SegmentKind(spider_vertebra_label("sacrum"), "Sacrum", codes.SCT.Sacrum, (170, 110, 40)),
    *(
        SegmentKind(spider_disc_label(level), f"{level.replace('-', '/')} disc", code, rgb)
        for level, code, rgb in zip(LEVELS, _DISCS, _DISC_RGB, strict=True)
    ),
    SegmentKind(SPIDER_CANAL, "Spinal canal", codes.SCT.VertebralCanal, (255, 225, 25)),
)
KIND_BY_LABEL: Final[dict[int, SegmentKind]] = {k.label_value: k for k in SEGMENT_KINDS}
