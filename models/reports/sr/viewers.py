"""What viewers need from a TID 1500 group beyond the template, and why.

OHIF (3.13, through the Cornerstone3D SR adapters) hydrates a measurement group into an
editable annotation only when it can pick a tool for it. It picks one from the group's
Tracking Identifier when that starts with the tool's own identifier
(``Cornerstone3DTools@^0.1.0:<tool>``), or from an SCOORD directly in the group (a TID 1410
image region) with 4–5 points or 1 point; then it reads the geometry from the SCOORD inside
the group's *first NUM* (``getSetupMeasurementData``). A TID 1410 group with NUMs therefore
fails ("No spatial coordinates group found"), and a TID 1501 group with the outline in its
first NUM is hydrated only through its tracking identifier.

So a finding group that has an outline names OHIF's closed-contour tool
(``PlanarFreehandROI``) at the start of its Tracking Identifier, followed by the node's own
text (``"… L4-L5 canal: severe"``): the tracking identifier is free text to the standard,
dcmqi and 3D Slicer show it as it is, and the readable part stays in it. The label OHIF
shows comes from the group's Comment (DCM 121106) TEXT item, which every group carries.
"""

from __future__ import annotations

from typing import Final

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

#: Cornerstone3D's SR tool namespace, as OHIF writes and reads it
CORNERSTONE_TAG: Final = "Cornerstone3DTools@^0.1.0"
#: the closed-contour tool OHIF hydrates a finding outline into
OUTLINE_TOOL: Final = "PlanarFreehandROI"
OUTLINE_PREFIX: Final = f"{CORNERSTONE_TAG}:{OUTLINE_TOOL} "
#: the line tool OHIF hydrates a measurement line (a two-point POLYLINE) into
LENGTH_PREFIX: Final = f"{CORNERSTONE_TAG}:Length "
#: Tracking Identifier is a TEXT item; LO-sized text keeps it readable in every viewer
MAX_TRACKING = 64 * 4


def viewer_tracking_identifier(text: str) -> str:
    """Tracking identifier of a group with an outline: OHIF's tool, then the node's text."""
    return (OUTLINE_PREFIX + text)[:MAX_TRACKING]


def line_tracking_identifier(text: str) -> str:
    """Tracking identifier of a group whose first NUM carries a measurement line: OHIF then
    draws that line with its Length tool (the group's other NUMs stay in the SR)."""
    return (LENGTH_PREFIX + text)[:MAX_TRACKING]


def readable_tracking(identifier: str) -> str:
    """The node's own text of a tracking identifier (without the viewer's tool prefix)."""
    return identifier.removeprefix(OUTLINE_PREFIX).removeprefix(LENGTH_PREFIX)


class Outline:
    """A closed polyline on one slice: the first NUM's "Image Region" SCOORD, or, in a group
    without NUMs, the group's TID 1410 image region (OHIF reads that one when the group has
    no NUM, and it hydrates a 4–5 point polyline as a rectangle)."""

    def __init__(self, source: hd.sr.SourceImageForRegion, points: np.ndarray) -> None:
        closed = np.vstack([points, points[:1]]).astype(np.float32)
        self.source, self.points = source, closed

    def coordinates(self) -> hd.sr.CoordinatesForMeasurement:
        return hd.sr.CoordinatesForMeasurement(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=self.points,
            source_image=self.source,
            purpose=codes.DCM.ImageRegion,
        )

    def region(self) -> hd.sr.ImageRegion:
        return hd.sr.ImageRegion(hd.sr.GraphicTypeValues.POLYLINE, self.points, self.source)


def outline_first(num: hd.sr.Measurement, outline: Outline) -> None:
    """Puts the outline first among the NUM's content items: readers take the first SCOORD
    of the first NUM as the group's geometry (a measurement line of the NUM follows it)."""
    item = num[0]
    existing = list(item.ContentSequence) if "ContentSequence" in item else []
    item.ContentSequence = hd.sr.ContentSequence([outline.coordinates(), *existing])


def comment(text: str) -> hd.sr.TextContentItem:
    """The group's label as OHIF shows it (DCM 121106 Comment)."""
    return hd.sr.TextContentItem(
        name=codes.DCM.Comment,
        value=text[:1024],
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


__all__ = [
    "CORNERSTONE_TAG",
    "LENGTH_PREFIX",
    "OUTLINE_PREFIX",
    "Outline",
    "outline_first",
    "comment",
    "line_tracking_identifier",
    "readable_tracking",
    "viewer_tracking_identifier",
]
