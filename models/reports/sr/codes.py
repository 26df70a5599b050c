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

#: Procedure reported when the source names none: LOINC 24968-0 "MR Lumbar spine" (LOINC/RSNA
#: Radiology Playbook; the neighbouring 24967-2 is "MR Lumbar spine WO and W contrast IV").
#: The node cannot tell whether contrast was given, so the code without a contrast axis is
#: the one that is true of every study it reads. pydicom's dictionary has no lumbar MR
#: procedure (only 25056-3 "MRI unspecified body region", CID 100), so it is spelled out
#: here; its check digit is verified in the tests.
DEFAULT_PROCEDURE: Final = CodedConcept(
    value="24968-0", scheme_designator="LN", meaning="MR Lumbar spine"
)
LUMBAR_SPINE: Final = codes.SCT.LumbarSpine

#: Concepts of the review and provenance items of each finding (TID 1501 qualitative
#: evaluations: CODE items for what a program may sort on, TEXT items for what a reader needs
#: to read). Viewers show the code meaning as the item's name, so the meanings are phrased
#: for a radiologist.
GRADER: Final = private("LSTEN-GRADER", "Deciding grader")
GRADER_VALUES: Final[dict[str, CodedConcept]] = {
    "measurement": private("LSTEN-GRADER-MEAS", "Measurement grader (rule-based)"),
    "learned": private("LSTEN-GRADER-LEARN", "Learned grader"),
}
GRADER_KIND: Final = private("LSTEN-GRADERKIND", "Kind of grader")
TRAINING_DATA: Final = private("LSTEN-TRAINDATA", "Training data")
REVIEW_REQUIRED: Final = private("LSTEN-REVIEW", "Radiologist review required")
REVIEW_REASON: Final = private("LSTEN-REVIEWWHY", "Reason for review")
YES: Final = codes.SCT.Yes
NO: Final = codes.SCT.No
DISAGREEMENT: Final = private("LSTEN-DISAGREE", "Grade difference between graders")
#: UCUM annotation unit of :data:`DISAGREEMENT`: steps on the three-grade scale
BANDS: Final = CodedConcept(value="{bands}", scheme_designator="UCUM", meaning="grade bands")
SECOND_GRADE: Final = private("LSTEN-2ND-GRADE", "Second opinion grade")
SECOND_GRADER: Final = private("LSTEN-2ND-GRADER", "Second opinion grader")
SECOND_PROBABILITIES: Final = private("LSTEN-2ND-PROB", "Second opinion probabilities")
SECOND_WITHDRAWN: Final = private("LSTEN-2ND-WITHDRAWN", "Second opinion withdrawn")
EXPLANATION_GRADE: Final = private("LSTEN-EXPL-GRADE", "Measurement grader grade (explanation)")
OOD_REASON: Final = private("LSTEN-OOD", "Out of distribution")


def grade_by(grader: str) -> CodedConcept:
    """Name of the CODE item holding one grader's grade when graders disagree."""
    key = "".join(ch for ch in grader.upper() if ch.isalnum())[:12] or "UNKNOWN"
    return private(f"LSTEN-GRADE-{key}", f"Grade by {grader} grader"[:64])


#: Root of the report: the notice and study-wide remarks (TID 1500 row "Qualitative
#: Evaluations", a CONTAINER whose TEXT and CODE items apply to the whole report).
QUALITATIVE_EVALUATIONS: Final = CodedConcept(
    value="C0034375", scheme_designator="UMLS", meaning="Qualitative Evaluations"
)
NOTICE_NAME: Final = private("LSTEN-NOTICE", "Notice")
NOTICE: Final = "AI result \u2014 not for diagnosis without review by a radiologist"
REVIEW_COUNT: Final = private("LSTEN-REVIEWCOUNT", "Findings needing review")
LABELLING_NOTE: Final = private("LSTEN-LABELNOTE", "Level labelling")
ALGORITHM_FULL_NAME: Final = private("LSTEN-ALGNAME", "Algorithm full name")
#: Finding type of the per-level measurement groups (no graded finding: morphometry)
LEVEL_MORPHOMETRY: Final = private("LSTEN-LEVEL", "Disc level measurements")
MEASUREMENT_NOTE: Final = private("LSTEN-MEASNOTE", "Measurement note")
