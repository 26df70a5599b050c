"""Reading a TID 1500 SR back the way the report tests check it."""

from __future__ import annotations

from pydicom.dataset import Dataset

#: Imaging Measurements container (DCM 126010)
IMAGING_MEASUREMENTS = "126010"


def sr_groups(sr: Dataset) -> dict[str, list]:
    """Tracking identifier -> the measurement group's content items."""
    container = next(i for i in sr.ContentSequence
                     if i.ConceptNameCodeSequence[0].CodeValue == IMAGING_MEASUREMENTS)
    groups = {}
    for group in container.ContentSequence:
        items = list(group.ContentSequence)
        text = next(i.TextValue for i in items
                    if i.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier")
        groups[text] = items
    return groups
