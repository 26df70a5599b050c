"""The Comprehensive 3D SR holding the TID 1500 measurement report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from lumbar_common.vocabulary import LEVELS, finding_keys, rsna_key
from models.reports.equipment import (
    MODEL_ROLES,
    algorithm_from_models,
    device_observer,
    node_algorithm,
)
from models.reports.frames import is_multiframe
from models.reports.seg.sop import segment_numbers
from models.reports.sr.codes import (
    ALGORITHM_FULL_NAME,
    DEFAULT_PROCEDURE,
    LABELLING_NOTE,
    NOTICE,
    NOTICE_NAME,
    OOD_REASON,
    QUALITATIVE_EVALUATIONS,
    REVIEW_COUNT,
    coding_scheme_identification,
)
from models.reports.sr.content import (
    level_group,
    measurement_group,
    referenced_segment,
    validate_finding,
)
from models.reports.sr.discs import check_discs, disc_groups
from models.reports.sr.geometry import SliceLocator
from models.reports.uids import model_versions, result_uid
from models.study import Volume

SERIES_DESCRIPTION = "AI lumbar stenosis SR"


def build_sr(
    findings: Mapping,
    volumes: Iterable[Volume],
    headers: Mapping[str, Dataset],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    segs: Sequence[Dataset] = (),
    series_number: int = 9001,
    contributing_equipment: Sequence[hd.ContributingEquipment] | None = None,
    previous_versions: Sequence[Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """TID 1500 report of the 25 findings: one group each, in RSNA column order except
    that a group with the most NUMs leads (see :func:`_complete_first`), then one group per
    level with its morphometry, one group per graded disc (``disc_findings``, see
    ``models.reports.sr.discs``), and at the root the notice that the result needs review.

    One SR holds the findings of every series: each outline references its own slice, and
    OHIF hydrates all of them in tracking mode from one report (see
    ``models.reports.sr.viewers`` for where the outline and label sit and why).

    ``headers`` maps SOPInstanceUID -> source dataset (pixel data not needed) for every
    instance a finding or measurement points to; ``segs`` are the SEGs to reference;
    ``previous_versions`` are the SRs this one supersedes (Predecessor Documents Sequence).
    """
    by_key, levels = check_findings(findings)
    models = findings.get("models") or {}
    study_uid = str(findings.get("study_instance_uid") or "")
    versions = model_versions(models)
    locator = SliceLocator(volumes, headers)
    disc_segments = _disc_segments(segs)
    groups = []
    for condition, side, level in finding_keys():
        key = rsna_key(condition, side, level)
        finding = by_key[key]
        groups.append(
            measurement_group(
                finding,
                levels.get(level),
                locator,
                tracking_uid=result_uid(study_uid, versions, f"tracking/{key}"),
                algorithm=_grader(models, finding),
                segment=disc_segments.get(level),
            )
        )
    groups = _complete_first(groups)
    for level in LEVELS:
        if level in levels:
            group = level_group(
                levels[level],
                locator,
                tracking_uid=result_uid(study_uid, versions, f"tracking/level/{level}"),
                algorithm=_segmentation(models),
            )
            if group is not None:
                groups.append(group)
    groups.extend(
        disc_groups(
            findings,
            lambda kind: result_uid(study_uid, versions, kind),
            {level: referenced_segment(*ref) for level, ref in _disc_segments(segs).items()},
            locator,
        )
    )
    referenced = _referenced_headers(groups, headers) or _seg_sources(segs, headers)
    if not referenced:
        raise ValueError("the findings reference no source image: nothing ties the SR to the study")
    evidence = referenced + [_header(seg) for seg in segs]
    algorithm = node_algorithm(models)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=device_observer(algorithm)
        ),
        procedure_reported=_procedures(referenced[0]),
        imaging_measurements=groups,
        # highdicom describes library images from top-level plane attributes, which a
        # multi-frame image keeps in functional groups: those stay out of the library
        referenced_images=[ds for ds in referenced if not is_multiframe(ds)] or None,
    )
    report[0].ContentSequence.append(_remarks(findings, by_key.values(), models))
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer="lumbar-node",
        # complete when every finding was graded: the pipeline's own status is still
        # "partial" while it writes the results, so it cannot say
        is_complete=all(f.get("assessable") for f in by_key.values()),
        contributing_equipment=contributing_equipment,
        previous_versions=list(previous_versions) or None,
    )
    if str(sr.StudyInstanceUID) != study_uid:
        raise ValueError(
            f"findings are for study {study_uid!r}, the images for {sr.StudyInstanceUID!r}"
        )
    sr.SeriesDescription = SERIES_DESCRIPTION
    # UTF-8: the notice has an em dash, and reasons and model names may hold any character
    sr.SpecificCharacterSet = "ISO_IR 192"
    sr.CodingSchemeIdentificationSequence = [coding_scheme_identification()]
    return sr


def check_findings(findings: Mapping) -> tuple[dict[str, Mapping], dict[str, Mapping]]:
    """Validates findings.json for an SR; returns findings by RSNA key and levels by name."""
    if findings.get("status") not in ("complete", "partial"):
        raise ValueError(f"no SR for a study with status {findings.get('status')!r}")
    by_key = _findings_by_key(findings.get("findings") or [])
    levels = {str(rec.get("level")): rec for rec in findings.get("levels") or []}
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"findings['levels'] has unknown levels {sorted(unknown)}")
    check_discs(findings.get("disc_findings") or [])
    return by_key, levels


def _complete_first(groups: list[Dataset]) -> list[Dataset]:
    """Groups in RSNA order, except that one with the most NUMs leads.

    3D Slicer makes its table columns from the first group's NUMs; a not-assessable first
    finding (no probability) would hide that column for the whole study.
    """

    def nums(group: Dataset) -> int:
        return sum(item.ValueType == "NUM" for item in group[0].ContentSequence)

    best = max(range(len(groups)), key=lambda i: (nums(groups[i]), -i))
    return [groups[best], *groups[:best], *groups[best + 1 :]]


def _findings_by_key(items: Sequence[Mapping]) -> dict[str, Mapping]:
    by_key: dict[str, Mapping] = {}
    for finding in items:
        key = validate_finding(finding)
        if key in by_key:
            raise ValueError(f"finding {key} appears twice")
        by_key[key] = finding
    missing = [
        rsna_key(c, s, lv) for c, s, lv in finding_keys() if rsna_key(c, s, lv) not in by_key
    ]
    if missing:
        raise ValueError(f"findings lack {len(missing)} of the 25 findings, e.g. {missing[:3]}")
    return by_key


def _grader(models: Mapping, finding: Mapping) -> hd.sr.AlgorithmIdentification | None:
    """The grader of an assessed finding; a finding nobody could grade names none."""
    grader = str(finding.get("grader") or "")
    if not grader and not finding.get("assessable"):
        return None
    card = models.get(f"grader_{grader}") or {}
    name = str(card.get("name") or f"{grader} grader")
    version = str(finding.get("model_version") or card.get("version") or "")
    if not version:
        raise ValueError(
            f"finding {finding.get('level')} {finding.get('condition')} names no model version"
        )
    # Algorithm Name and Version are TEXT items (UT): the full name fits
    return hd.sr.AlgorithmIdentification(name=name, version=version)


def _segmentation(models: Mapping) -> hd.sr.AlgorithmIdentification:
    """The segmentation model, which the level measurements are taken from."""
    algorithm = algorithm_from_models(models, "segmentation")
    return hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version)


def _remarks(
    findings: Mapping, items: Iterable[Mapping], models: Mapping
) -> hd.sr.ContainerContentItem:
    """The report-level Qualitative Evaluations container: the notice that this is an AI
    result needing review, how many findings need it, what made the level count uncertain,
    a segmentation out of distribution, and every model's full name and version."""

    def text(name: hd.sr.CodedConcept, value: object) -> hd.sr.TextContentItem:
        return hd.sr.TextContentItem(
            name=name,
            value=str(value)[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )

    content = [text(NOTICE_NAME, findings.get("notice") or NOTICE)]
    reviews = [f.get("review") for f in items if isinstance(f.get("review"), Mapping)]
    if reviews or findings.get("review_required") is not None:
        count = findings.get("review_required")
        if count is None:
            count = sum(bool(r.get("required")) for r in reviews)
        content.append(text(REVIEW_COUNT, f"{count} of 25 findings need review by a radiologist"))
    labelling = findings.get("level_labelling") or {}
    for warning in labelling.get("warnings") or []:
        content.append(text(LABELLING_NOTE, warning))
    segmentation = (findings.get("ood") or {}).get("segmentation") or {}
    if segmentation.get("flagged"):
        content.append(
            text(OOD_REASON, segmentation.get("reason") or "segmentation out of distribution")
        )
    roles = [r for r in MODEL_ROLES if r in models] + sorted(set(models) - set(MODEL_ROLES))
    for role in roles:
        algorithm = algorithm_from_models(models, role)
        content.append(
            text(ALGORITHM_FULL_NAME, f"{role}: {algorithm.name} version {algorithm.version}")
        )
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(content)
    return container


def _disc_segments(segs: Sequence[Dataset]) -> dict[str, tuple[Dataset, int]]:
    """Level (``"L4-L5"``, ``"T12-L1"``) -> SEG and segment number of its disc."""
    found: dict[str, tuple[Dataset, int]] = {}
    for seg in segs:
        for label, number in segment_numbers(seg).items():
            if label.endswith(" disc") and "/" in label:
                found.setdefault(label[: -len(" disc")].replace("/", "-"), (seg, number))
    return found


def _referenced_headers(groups: Sequence[Dataset], headers: Mapping[str, Dataset]) -> list[Dataset]:
    """Source instances any content item points to, in first-reference order."""
    uids: dict[str, None] = {}

    def walk(items: Iterable[Dataset]) -> None:
        for item in items:
            for ref in getattr(item, "ReferencedSOPSequence", []):
                uids.setdefault(str(ref.ReferencedSOPInstanceUID), None)
            walk(getattr(item, "ContentSequence", []))

    walk(item for group in groups for item in group)
    return [headers[uid] for uid in uids if uid in headers]


def _header(ds: Dataset) -> Dataset:
    """Shallow copy without pixels: highdicom deep-copies evidence, and a SEG's frames are
    most of its bytes but none of what the evidence sequence records."""
    header = Dataset({tag: elem for tag, elem in ds.items() if tag < 0x7FE00000})
    header.file_meta = getattr(ds, "file_meta", Dataset())
    return header


def _seg_sources(segs: Sequence[Dataset], headers: Mapping[str, Dataset]) -> list[Dataset]:
    """Source images of the SEGs: the evidence when no finding points at an image."""
    return [
        headers[str(ref.ReferencedSOPInstanceUID)]
        for seg in segs
        for series in seg.ReferencedSeriesSequence
        for ref in series.ReferencedInstanceSequence
        if str(ref.ReferencedSOPInstanceUID) in headers
    ]


def _procedures(source: Dataset) -> list[Code | hd.sr.CodedConcept]:
    """The imaging procedure as the source names it, else MR lumbar spine (LOINC 24968-0)."""
    codes = [
        hd.sr.CodedConcept.from_dataset(item)
        for item in getattr(source, "ProcedureCodeSequence", [])
    ]
    return codes or [DEFAULT_PROCEDURE]
