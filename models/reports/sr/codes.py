"""Coded concepts of the measurement report.

Standard concepts come from pydicom's concept dictionary. SNOMED CT has no confirmed
concept for neural foraminal narrowing or subarticular stenosis, "spinal stenosis" is not in
PS3.16, and the RSNA grading merges normal and mild into one grade that no single SNOMED
concept means; those concepts live in the node's private coding scheme ``99LUMBAR``, which
every SR declares in CodingSchemeIdentificationSequence. Using SCT "Mild" for the merged
grade would tell a reader that a normal level is mildly stenotic.
"""

from __future__ import annotations

from typing import Final

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from lumbar_common.vocabulary import CANAL, CONDITIONS, FORAMEN, GRADES, LEVELS, SUBARTICULAR

PRIVATE_SCHEME: Final = "99LUMBAR"


def private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


def coding_scheme_identification() -> Dataset:
    """The CodingSchemeIdentificationSequence item declaring :data:`PRIVATE_SCHEME`."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "lumbar-node lumbar spine findings"
    item.CodingSchemeVersion = "1"
    item.CodingSchemeResponsibleOrganization = "lumbar-node project"
    return item


#: Finding type of each condition.
CONDITION_CODES: Final[dict[str, CodedConcept]] = {
    CANAL: private("LSTEN-CANAL", "Spinal canal stenosis"),
    FORAMEN: private("LSTEN-FORAMEN", "Neural foraminal narrowing"),
    SUBARTICULAR: private("LSTEN-SUBART", "Subarticular stenosis"),
}
assert set(CONDITION_CODES) == set(CONDITIONS)

#: Short names used in tracking identifiers and the key image table.
CONDITION_SHORT: Final[dict[str, str]] = {
    CANAL: "canal",
    FORAMEN: "foramen",
    SUBARTICULAR: "subarticular",
}

#: Severity value of each RSNA grade.
GRADE_CODES: Final[dict[str, CodedConcept | Code]] = {
    "Normal/Mild": private("LSTEN-NORMMILD", "Normal or mild"),
    "Moderate": codes.SCT.Moderate,
    "Severe": codes.SCT.Severe,
}
assert tuple(GRADE_CODES) == GRADES

SEVERITY: Final = codes.SCT.Severity
#: Severity value of a finding that could not be graded.
UNDETERMINED: Final = codes.SCT.Undetermined
#: Name of the TEXT item that says why a finding could not be graded.
REASON: Final = private("LSTEN-NOTASSESS", "Reason not assessable")
PROBABILITY: Final = codes.DCM.Probability
NO_UNITS: Final = codes.UCUM.NoUnits
NOT_ATTEMPTED: Final = codes.DCM.MeasurementNotAttempted

#: Finding site of a level (CID 1003 "level of ... intervertebral disc").
LEVEL_CODES: Final[dict[str, Code]] = dict(
    zip(
        LEVELS,
        (
            codes.SCT.LevelOfL1L2IntervertebralDisc,
            codes.SCT.LevelOfL2L3IntervertebralDisc,
            codes.SCT.LevelOfL3L4IntervertebralDisc,
            codes.SCT.LevelOfL4L5IntervertebralDisc,
            codes.SCT.LevelOfL5S1IntervertebralDisc,
        ),
        strict=True,
    )
)
#: The disc itself, finding site of disc heights (CID 7604).
DISC_CODES: Final[dict[str, Code]] = dict(
    zip(
        LEVELS,
        (
            codes.SCT.L1L2Disc,
            codes.SCT.L2L3Disc,
            codes.SCT.L3L4Disc,
            codes.SCT.L4L5Disc,
            codes.SCT.L5S1Disc,
        ),
        strict=True,
    )
)
#: Vertebrae as finding sites of vertebral measurements.
VERTEBRA_CODES: Final[dict[str, Code]] = {
    "L1": codes.SCT.L1Vertebra,
    "L2": codes.SCT.L2Vertebra,
    "L3": codes.SCT.L3Vertebra,
    "L4": codes.SCT.L4Vertebra,
    "L5": codes.SCT.L5Vertebra,
    "S1": codes.SCT.Sacrum,
}
LATERALITY: Final[dict[str, Code]] = {"left": codes.SCT.Left, "right": codes.SCT.Right}

#: Procedure reported when the source names none: MR, with the lumbar spine as finding site
#: of every group. LOINC 25056-3 is the MR procedure code confirmed in PS3.16 (CID 100).
DEFAULT_PROCEDURE: Final = codes.LN.MRIUnspecifiedBodyRegion
LUMBAR_SPINE: Final = codes.SCT.LumbarSpine
