"""One TID 1500 measurement group per graded finding, and one per level for its morphometry.

Each finding group names the level (finding site, with laterality where sided), the
condition (finding type), the grade (Severity, a CODE qualitative evaluation), the
probability of that grade, the measurements behind that grade only (see
``models.reports.sr.measurements``) and who decided it, whether it needs review and what
the other grader said (``models.reports.sr.trust``).

Where viewers look for a finding's outline (see ``models.reports.sr.viewers``): a finding
with an ROI is a TID 1501 group whose *first NUM* (the probability of the grade, else the
first measurement) carries the ROI box on its slice as an INFERRED FROM SCOORD (purpose
"Image Region"). That is where OHIF's TID 1500 adapter, dcmqi and 3D Slicer read the
geometry of a group; an image region beside the NUMs (TID 1410) is found by none of them
once the group has NUMs, and TID 1410 forbids coordinates inside its NUMs. The other NUMs
carry their own measurement lines. The disc segment of the SEG is referenced from the
probability NUM as its source (an IMAGE item with the segment number); without an ROI the
group's region is the disc segment (TID 1411). A finding without any NUM (not assessable,
no measurement) has nothing to hang an outline on and is listed, not drawn.

Every group carries a Comment (DCM 121106) naming level, side, finding and grade, e.g.
``"L4-L5 right subarticular: Moderate"``: OHIF takes a measurement's label from exactly that
item, and otherwise shows only code meanings and numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from lumbar_common.vocabulary import GRADES, rsna_key
from models.reports.sr.codes import (
    CONDITION_CODES,
    CONDITION_SHORT,
    GRADE_CODES,
    LATERALITY,
    LEVEL_CODES,
    LEVEL_MORPHOMETRY,
    MEASUREMENT_NOTE,
    NO_UNITS,
    PROBABILITY,
    REASON,
    SEVERITY,
    UNDETERMINED,
)
from models.reports.sr.geometry import SliceLocator
from models.reports.sr.measurements import (
    build_measurement,
    finding_evidence,
    level_measurements,
)
from models.reports.sr.trust import review_suffix, trust_items
from models.reports.sr.viewers import (
    Outline,
    comment,
    line_tracking_identifier,
    outline_first,
    viewer_tracking_identifier,
)


def tracking_text(finding: Mapping) -> str:
    """E.g. ``"L4-L5 canal: severe"``, ``"L4-L5 left foramen: moderate [review: learned
    severe]"``."""
    side = f"{finding['side']} " if finding.get("side") else ""
    grade = finding["grade"].lower() if finding.get("assessable") else "not assessable"
    text = f"{finding['level']} {side}{CONDITION_SHORT[finding['condition']]}: {grade}"
    return text + review_suffix(finding)


def label_text(finding: Mapping) -> str:
    """The label a viewer shows, e.g. ``"L4-L5 right subarticular: Moderate"``, ``"L1-L2
    canal: not assessable"``, with the review mark of :func:`tracking_text`."""
    side = f"{finding['side']} " if finding.get("side") else ""
    grade = str(finding["grade"]) if finding.get("assessable") else "not assessable"
    text = f"{finding['level']} {side}{CONDITION_SHORT[finding['condition']]}: {grade}"
    return text + review_suffix(finding)


def validate_finding(finding: Mapping) -> str:
    """Checks one findings.json finding; returns its RSNA key."""
    key = rsna_key(finding.get("condition", ""), finding.get("side"), finding.get("level", ""))
    if finding.get("assessable"):
        if finding.get("grade") not in GRADES:
            raise ValueError(f"{key}: grade {finding.get('grade')!r} is not one of {GRADES}")
        probabilities = finding.get("probabilities")
        if probabilities is not None:
            try:
                p = np.asarray(probabilities, dtype=np.float64)
            except (TypeError, ValueError):
                p = np.full(1, np.nan)
            if p.shape != (3,) or not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
                raise ValueError(
                    f"{key}: probabilities {probabilities!r} are not 3 values in [0, 1]"
                )
    elif not finding.get("reason"):
        raise ValueError(f"{key}: a finding that is not assessable needs a reason")
    return key


def measurement_group(
    finding: Mapping,
    level_record: Mapping | None,
    locator: SliceLocator,
    tracking_uid: str,
    algorithm: hd.sr.AlgorithmIdentification | None,
    segment: tuple[Dataset, int] | None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    level, side = finding["level"], finding.get("side")
    outline = _roi(finding.get("roi"), locator)
    # a group without an ROI but with the disc segment is a TID 1411 group, whose NUMs may
    # not carry coordinates; every other group is TID 1501, whose NUMs may
    volumetric = outline is None and segment is not None
    trust = trust_items(finding)
    nums = [_probability(finding, segment)] + [
        build_measurement(str(record["name"]), record, level, locator, not volumetric, side)
        for record in finding_evidence(finding, level_record)
    ]
    measurements = [num for num in nums if num is not None] + trust.measurements
    if outline is not None and measurements:
        outline_first(measurements[0], outline)
    severity = GRADE_CODES[finding["grade"]] if finding.get("assessable") else UNDETERMINED
    text = tracking_text(finding)
    common = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid,
            identifier=viewer_tracking_identifier(text)
            if outline is not None and measurements
            else text,
        ),
        finding_type=CONDITION_CODES[finding["condition"]],
        algorithm_id=algorithm,
        finding_sites=[
            hd.sr.FindingSite(LEVEL_CODES[level], laterality=LATERALITY.get(side or ""))
        ],
        measurements=measurements or None,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(SEVERITY, severity),
            *trust.evaluations,
        ],
    )
    group: hd.sr.MeasurementsAndQualitativeEvaluations
    if outline is not None and not measurements:
        # nothing to hang the outline on: a TID 1410 group whose region it is
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=outline.region(), **common
        )
    elif volumetric:
        assert segment is not None
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=referenced_segment(*segment), **common
        )
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    content = group[0].ContentSequence
    content.append(comment(label_text(finding)))
    if not finding.get("assessable"):
        content.append(
            hd.sr.TextContentItem(
                name=REASON,
                value=str(finding["reason"])[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    content.extend(trust.texts)
    return group


def level_group(
    level_record: Mapping,
    locator: SliceLocator,
    tracking_uid: str,
    algorithm: hd.sr.AlgorithmIdentification | None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations | None:
    """TID 1501 group of a level's disc heights, body height and listhesis, with their
    measurement lines, and the notes on measurements that were withheld; None when the
    level has neither.

    These describe the level, not one graded finding, so they are not repeated in the
    finding groups: there they would read as the evidence for a grade they did not decide.
    """
    level = str(level_record["level"])
    nums = [
        build_measurement(str(r["name"]), r, level, locator, True)
        for r in level_measurements(level_record)
    ]
    measurements = [num for num in nums if num is not None]
    notes = [str(w) for w in level_record.get("warnings") or []]
    if not measurements and not notes:
        return None
    text = f"{level} level measurements"
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid,
            identifier=line_tracking_identifier(text) if _starts_with_line(measurements)
            else text,
        ),
        finding_type=LEVEL_MORPHOMETRY,
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(LEVEL_CODES[level])],
        measurements=measurements or None,
    )
    group[0].ContentSequence.append(comment(text))
    for note in notes:
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=MEASUREMENT_NOTE,
                value=note[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


def _starts_with_line(measurements: Sequence[hd.sr.Measurement]) -> bool:
    """Whether the first NUM's first SCOORD is a two-point line (what OHIF's Length reads)."""
    if not measurements or "ContentSequence" not in measurements[0][0]:
        return False
    for item in measurements[0][0].ContentSequence:
        if item.ValueType == "SCOORD":
            return item.GraphicType == "POLYLINE" and len(item.GraphicData) == 4
    return False


def _roi(roi: Mapping | None, locator: SliceLocator) -> Outline | None:
    """The finding's ROI box as a closed polyline on its slice, or None without corners."""
    if not roi or roi.get("corners_lps") is None:
        return None
    corners = roi["corners_lps"]
    if len(corners) < 3:
        raise ValueError(f"ROI needs at least 3 corners, got {corners!r}")
    source, data = locator.pixel_points(roi.get("series_instance_uid"), roi.get("slice"), corners)
    return Outline(source, data)


def _probability(finding: Mapping, segment: tuple[Dataset, int] | None) -> hd.sr.Measurement | None:
    """Probability of the reported grade (DCM 122157, UCUM "1"), inferred from the disc."""
    probabilities = finding.get("probabilities")
    if not finding.get("assessable") or probabilities is None:
        return None
    value = float(probabilities[GRADES.index(finding["grade"])])
    num = hd.sr.Measurement(name=PROBABILITY, value=value, unit=NO_UNITS)
    if segment is not None:
        seg, number = segment
        source = hd.sr.ImageContentItem(
            name=codes.DCM.SourceOfMeasurement,
            referenced_sop_class_uid=str(seg.SOPClassUID),
            referenced_sop_instance_uid=str(seg.SOPInstanceUID),
            referenced_segment_numbers=[number],
            relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
        )
        item = num[0]
        if "ContentSequence" not in item:
            item.ContentSequence = hd.sr.ContentSequence()
        item.ContentSequence.append(source)
    return num


def referenced_segment(seg: Dataset, segment_number: int) -> hd.sr.ReferencedSegment:
    """Reference to a whole segment, built directly because highdicom's
    ``ReferencedSegment.from_segmentation`` does not accept LABELMAP SEGs."""
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        segment_number=segment_number,
        source_series=hd.sr.SourceSeriesForSegmentation(
            str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
        ),
    )


__all__ = [
    "label_text",
    "level_group",
    "measurement_group",
    "referenced_segment",
    "tracking_text",
    "validate_finding",
]
