"""Reading a TID 1500 SR back the way the report tests check it.

Groups are keyed by the node's own tracking text: a group with an outline starts its
Tracking Identifier with the viewer tool prefix (``models.reports.sr.viewers``), which the
readers here strip, so tests name groups as a radiologist reads them.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from models.reports.sr.viewers import readable_tracking

#: Imaging Measurements container (DCM 126010)
IMAGING_MEASUREMENTS = "126010"
#: Comment (DCM 121106): the label OHIF shows for a group
COMMENT = "121106"


def measurement_groups(sr: Dataset) -> list[Dataset]:
    container = next(i for i in sr.ContentSequence
                     if i.ConceptNameCodeSequence[0].CodeValue == IMAGING_MEASUREMENTS)
    return list(container.ContentSequence)


def tracking(items: list) -> str:
    """The readable tracking identifier of a group's content items."""
    raw = next(i.TextValue for i in items
               if i.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier")
    return readable_tracking(str(raw))


def sr_groups(sr: Dataset) -> dict[str, list]:
    """Tracking identifier (readable) -> the measurement group's content items."""
    return {tracking(list(g.ContentSequence)): list(g.ContentSequence)
            for g in measurement_groups(sr)}


def label(items: list) -> str | None:
    """The group's Comment, which OHIF shows as the measurement's label."""
    return next((str(i.TextValue) for i in items
                 if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == COMMENT),
                None)


def outline(items: list) -> Dataset | None:
    """The group's outline where viewers read it: the first SCOORD of the first NUM, or the
    group's own region when the group has no NUM."""
    nums = [i for i in items if i.ValueType == "NUM"]
    pool = list(nums[0].get("ContentSequence", [])) if nums else items
    return next((i for i in pool if i.ValueType in ("SCOORD", "SCOORD3D")), None)
