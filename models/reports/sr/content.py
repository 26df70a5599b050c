"""One TID 1500 measurement group per graded finding, and one per level for its morphometry.

Each finding group names the level (finding site, with laterality where sided), the
condition (finding type), the grade (Severity, a CODE qualitative evaluation), the
probability of that grade, the measurements behind that grade only (see
``models.reports.sr.measurements``) and who decided it, whether it needs review and what
the other grader said (``models.reports.sr.trust``).

The group's region is the ROI box on its slice (TID 1410, a SCOORD that OHIF draws). TID
1410 allows an image region or a segment, not both, so the disc segment of the SEG is
referenced from the probability NUM as its source (an IMAGE item with the segment number).
Without an ROI the region is the disc segment (TID 1411); without either, the group is a
TID 1501 group whose NUMs carry their measurement lines as SCOORDs. The grade (and a review
mark) also goes into the tracking identifier text because OHIF does not show CODE
evaluations as labels.
"""

from __future__ import annotations

from collections.abc import Mapping

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


def tracking_text(finding: Mapping) -> str:
    """E.g. ``"L4-L5 canal: severe"``, ``"L4-L5 left foramen: moderate [review: learned
    severe]"``."""
    side = f"{finding['side']} " if finding.get("side") else ""
    grade = finding["grade"].lower() if finding.get("assessable") else "not assessable"
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
    roi_region = _roi(finding.get("roi"), locator)
    free = roi_region is None and segment is None
    trust = trust_items(finding)
    nums = [_probability(finding, segment)] + [
        build_measurement(str(record["name"]), record, level, locator, free, side)
        for record in finding_evidence(finding, level_record)
    ]
    measurements = [num for num in nums if num is not None] + trust.measurements
    severity = GRADE_CODES[finding["grade"]] if finding.get("assessable") else UNDETERMINED
    common = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=tracking_text(finding)
        ),
        finding_type=CONDITION_CODES[finding["condition"]],
        algorithm_id=algorithm,
        finding_sites=[
            hd.sr.FindingSite(LEVEL_CODES[level], laterality=LATERALITY.get(side or ""))
        ],
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(SEVERITY, severity),
            *trust.evaluations,
        ],
    )
    group: hd.sr.MeasurementsAndQualitativeEvaluations
    if roi_region is not None:
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=roi_region, **common
        )
    elif segment is not None:
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=referenced_segment(*segment), **common
        )
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    content = group[0].ContentSequence
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
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=f"{level} level measurements"
        ),
        finding_type=LEVEL_MORPHOMETRY,
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(LEVEL_CODES[level])],
        measurements=measurements or None,
    )
    for note in notes:
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=MEASUREMENT_NOTE,
                value=note[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


def _roi(roi: Mapping | None, locator: SliceLocator) -> hd.sr.ImageRegion | None:
    if not roi or roi.get("corners_lps") is None:
        return None
    corners = roi["corners_lps"]
    if len(corners) < 3:
        raise ValueError(f"ROI needs at least 3 corners, got {corners!r}")
    source, data = locator.pixel_points(roi.get("series_instance_uid"), roi.get("slice"), corners)
    closed = np.vstack([data, data[:1]])
    return hd.sr.ImageRegion(hd.sr.GraphicTypeValues.POLYLINE, closed, source)


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
    "level_group",
    "measurement_group",
    "referenced_segment",
    "tracking_text",
    "validate_finding",
]
