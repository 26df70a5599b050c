"""One TID 1500 measurement group per intervertebral disc graded by the disc grader.

The disc grader reads each disc the way the SPIDER experts graded it: a Pfirrmann grade
(1–5), a Modic type (0–3) and six present/absent findings. Neither Pfirrmann grades nor
Modic types nor these findings have a SNOMED CT concept confirmed in pydicom's dictionary or
PS3.16, so they are concepts of the node's private scheme ``99LUMBAR`` (the values of the
binary findings are SCT Present/Absent). The finding site is the disc's SNOMED concept (CID
7604). Every group says which grader decided it and from what data: unlike the stenosis
grades, these are learned from real expert gradings, and a reader must know that.

The chosen grade's probability and each finding's probability are NUMs (DCM-style unit
``1``) so that programs can threshold them; the whole Pfirrmann and Modic distributions are
TEXT for the reader. The grades and the present findings are also written into the
tracking identifier and the group's Comment, which OHIF shows as its label.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from models.reports.sr.codes import (
    GRADER,
    GRADER_KIND,
    GRADER_VALUES,
    NO_UNITS,
    OOD_REASON,
    REASON,
    REVIEW_REASON,
    TRAINING_DATA,
    private,
)
from models.reports.sr.geometry import SliceLocator
from models.reports.sr.trust import grader_value
from models.reports.sr.viewers import (
    Outline,
    comment,
    outline_first,
    viewer_tracking_identifier,
)

#: Grader kind of every disc group: the disc grader is trained on real expert gradings.
DISC_GRADER_KIND: Final = "learned: trained on real expert gradings (SPIDER)"
DISC_TRAINING_DATA: Final = "real sagittal MRI with expert disc gradings (SPIDER)"

DISC_FINDING: Final = private("LDISC", "Intervertebral disc assessment")
PFIRRMANN: Final = private("LDISC-PFIRRMANN", "Pfirrmann grade")
PFIRRMANN_P: Final = private("LDISC-PFIRR-P", "Probability of Pfirrmann grade")
PFIRRMANN_ALL: Final = private("LDISC-PFIRR-PS", "Pfirrmann grade probabilities")
PFIRRMANN_VALUES: Final[dict[int, CodedConcept]] = {
    g: private(f"LDISC-PFIRR-{g}", f"Pfirrmann grade {roman}")
    for g, roman in zip(range(1, 6), ("I", "II", "III", "IV", "V"), strict=True)
}
MODIC: Final = private("LDISC-MODIC", "Modic type")
MODIC_P: Final = private("LDISC-MODIC-P", "Probability of Modic type")
MODIC_ALL: Final = private("LDISC-MODIC-PS", "Modic type probabilities")
MODIC_VALUES: Final[dict[int, CodedConcept]] = {
    0: private("LDISC-MODIC-0", "No Modic change"),
    1: private("LDISC-MODIC-1", "Modic type 1 change"),
    2: private("LDISC-MODIC-2", "Modic type 2 change"),
    3: private("LDISC-MODIC-3", "Modic type 3 change"),
}

#: Binary findings: findings.json key -> (code value, meaning, key image abbreviation).
BINARY: Final[dict[str, tuple[str, str, str]]] = {
    "narrowing": ("LDISC-NARROW", "Disc space narrowing", "Narr"),
    "herniation": ("LDISC-HERNIA", "Disc herniation", "Hern"),
    "bulging": ("LDISC-BULGE", "Disc bulging", "Bulg"),
    "spondylolisthesis": ("LDISC-LISTH", "Spondylolisthesis", "Listh"),
    "endplate_upper": ("LDISC-EPUP", "Upper endplate defect", "EPu"),
    "endplate_lower": ("LDISC-EPLO", "Lower endplate defect", "EPl"),
}
#: Every private code value above fits CodeValue (SH, 16 characters).
assert all(
    len(c.value) <= 16
    for c in (PFIRRMANN_P, PFIRRMANN_ALL, MODIC_P, MODIC_ALL, *PFIRRMANN_VALUES.values())
)
assert all(len(value) <= 14 for value, _, _ in BINARY.values())  # + "-P"
PRESENT: Final = codes.SCT.Present
ABSENT: Final = codes.SCT.Absent


def binary_name(key: str) -> CodedConcept:
    value, meaning, _ = BINARY[key]
    return private(value, meaning)


def binary_probability(key: str) -> CodedConcept:
    value, meaning, _ = BINARY[key]
    return private(f"{value}-P", f"Probability of {meaning[0].lower()}{meaning[1:]}")


def disc_site(level: str) -> Code | CodedConcept:
    """SNOMED concept of the disc at ``level`` (e.g. SCT 84020006 "L4/L5 disc"); a level
    pydicom's dictionary does not name gets a private concept rather than a guessed code."""
    code = getattr(codes.SCT, level.replace("-", "") + "Disc", None)
    if isinstance(code, Code):
        return code
    key = "".join(ch for ch in level.upper() if ch.isalnum())[:8]
    return private(f"LDISC-S-{key}", f"{level.replace('-', '/')} disc")


def present_findings(disc: Mapping) -> list[str]:
    """Keys of the binary findings present, in :data:`BINARY` order."""
    return [
        key for key in BINARY if isinstance(disc.get(key), Mapping) and disc[key].get("present")
    ]


def disc_tracking_text(disc: Mapping) -> str:
    """E.g. ``"L4-L5 disc: Pfirrmann 4, Modic 2; bulging, narrowing"``."""
    level = str(disc["level"])
    if not disc.get("assessable"):
        return f"{level} disc: not assessable"
    text = f"{level} disc: Pfirrmann {disc['pfirrmann']['grade']}, Modic {disc['modic']['type']}"
    found = [BINARY[key][1].lower() for key in present_findings(disc)]
    return text + (f"; {', '.join(found)}" if found else "")


def validate_disc(disc: Mapping) -> str:
    """Checks one ``disc_findings`` entry; returns its level."""
    level = str(disc.get("level") or "")
    if "-" not in level:
        raise ValueError(f"disc finding has no level: {disc!r}"[:200])
    if not disc.get("assessable"):
        if not disc.get("reason"):
            raise ValueError(f"{level} disc: a disc that is not assessable needs a reason")
        return level
    grade = (disc.get("pfirrmann") or {}).get("grade")
    if grade not in PFIRRMANN_VALUES:
        raise ValueError(f"{level} disc: Pfirrmann grade {grade!r} is not 1–5")
    modic = (disc.get("modic") or {}).get("type")
    if modic not in MODIC_VALUES:
        raise ValueError(f"{level} disc: Modic type {modic!r} is not 0–3")
    for key in BINARY:
        item = disc.get(key)
        if item is None:
            continue
        p = item.get("probability")
        if p is not None and not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{level} disc: {key} probability {p!r} is outside [0, 1]")
    return level


def check_discs(discs: Sequence[Mapping]) -> list[Mapping]:
    """Validated disc entries, each level once."""
    seen: set[str] = set()
    for disc in discs:
        level = validate_disc(disc)
        if level in seen:
            raise ValueError(f"disc {level} appears twice in disc_findings")
        seen.add(level)
    return list(discs)


def _distribution(values: object, labels: Sequence[str]) -> str | None:
    try:
        ps = [float(p) for p in values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if len(ps) != len(labels):
        return None
    return ", ".join(f"{label} {p:.2f}" for label, p in zip(labels, ps, strict=True))


def _text(name: CodedConcept, value: object) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=name, value=str(value)[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _num(name: CodedConcept, value: object) -> hd.sr.Measurement | None:
    if value is None:
        return None
    return hd.sr.Measurement(name=name, value=float(value), unit=NO_UNITS)


def disc_algorithm(models: Mapping, disc: Mapping) -> hd.sr.AlgorithmIdentification | None:
    """The disc grader with the version that graded this disc; ``model_version`` may be
    ``"name@version"`` (as findings.json writes it) or the bare version."""
    card = models.get("disc_grader") or {}
    version = str(disc.get("model_version") or card.get("version") or "")
    if not version:
        return None
    prefix = ""
    if "@" in version:
        prefix, version = version.split("@", 1)
    name = str(card.get("name") or prefix or "disc grader")
    return hd.sr.AlgorithmIdentification(name=name, version=version)


def graded_findings(disc: Mapping) -> list[str]:
    """The findings a disc entry carries a value for (Pfirrmann, Modic, the binary ones)."""
    return [name for name in ("pfirrmann", "modic", *BINARY)
            if isinstance(disc.get(name), Mapping)]


def radiologist_findings(disc: Mapping) -> list[str]:
    """Findings whose value a radiologist's review set (grader "radiologist")."""
    return [name for name in graded_findings(disc)
            if disc[name].get("grader") == "radiologist"]


def disc_outline(level_record: Mapping | None, locator: SliceLocator) -> Outline | None:
    """The disc on the slice its heights were measured on: the quadrilateral of the ends of
    its anterior and posterior height lines. None when either line is missing or the two
    lie on different slices."""
    by_name = {str(m.get("name")): m for m in (level_record or {}).get("measurements") or []}
    front, back = by_name.get("disc_height_anterior"), by_name.get("disc_height_posterior")
    if not front or not back:
        return None
    where = [(m.get("series_instance_uid"), m.get("slice")) for m in (front, back)]
    if where[0] != where[1] or where[0][0] is None:
        return None
    a, p = front.get("points_lps") or [], back.get("points_lps") or []
    if len(a) != 2 or len(p) != 2:
        return None
    source, data = locator.pixel_points(where[0][0], where[0][1], [a[0], a[1], p[1], p[0]])
    return Outline(source, data)


def disc_group(
    disc: Mapping,
    tracking_uid: str,
    models: Mapping,
    segment: hd.sr.ReferencedSegment | None = None,
    outline: Outline | None = None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group of one disc, its outline in the first NUM (see
    ``models.reports.sr.viewers``); TID 1410 with the outline as region when it has no NUM,
    TID 1411 when it has neither outline nor NUM but the disc segment of the SEG."""
    level = str(disc["level"])
    evaluations: list[hd.sr.QualitativeEvaluation] = []
    measurements: list[hd.sr.Measurement] = []
    texts: list[hd.sr.TextContentItem] = []
    assessable = bool(disc.get("assessable"))
    if assessable:
        pfirrmann, modic = disc["pfirrmann"], disc["modic"]
        grade, mtype = int(pfirrmann["grade"]), int(modic["type"])
        evaluations.append(hd.sr.QualitativeEvaluation(PFIRRMANN, PFIRRMANN_VALUES[grade]))
        evaluations.append(hd.sr.QualitativeEvaluation(MODIC, MODIC_VALUES[mtype]))
        ps, ms = pfirrmann.get("probabilities"), modic.get("probabilities")
        for name, values, index in ((PFIRRMANN_P, ps, grade - 1), (MODIC_P, ms, mtype)):
            if values is not None and 0 <= index < len(values):
                num = _num(name, values[index])
                if num is not None:
                    measurements.append(num)
        for key in BINARY:
            item = disc.get(key)
            if not isinstance(item, Mapping) or item.get("present") is None:
                continue
            value = PRESENT if item["present"] else ABSENT
            evaluations.append(hd.sr.QualitativeEvaluation(binary_name(key), value))
            num = _num(binary_probability(key), item.get("probability"))
            if num is not None:
                measurements.append(num)
        for name, values, labels in (
            (PFIRRMANN_ALL, ps, ("I", "II", "III", "IV", "V")),
            (MODIC_ALL, ms, ("none", "type 1", "type 2", "type 3")),
        ):
            described = _distribution(values, labels)
            if described:
                texts.append(_text(name, described))
    reviewed = radiologist_findings(disc)
    learned = not reviewed or len(reviewed) < len(graded_findings(disc))
    if learned:
        evaluations.append(hd.sr.QualitativeEvaluation(GRADER, GRADER_VALUES["learned"]))
        texts.append(_text(GRADER_KIND, DISC_GRADER_KIND))
        texts.append(_text(TRAINING_DATA, DISC_TRAINING_DATA))
    if reviewed:
        # a corrected report credits the radiologist with what they changed, never the model
        evaluations.append(hd.sr.QualitativeEvaluation(GRADER, grader_value("radiologist")))
        texts.append(_text(GRADER_KIND, "radiologist review: " + ", ".join(reviewed)))
    for reason in (disc.get("review") or {}).get("reasons") or []:
        texts.append(_text(REVIEW_REASON, reason))
    ood = disc.get("ood")
    if isinstance(ood, Mapping) and ood.get("flagged"):
        texts.append(_text(OOD_REASON, ood.get("reason") or "disc out of distribution"))
    if not assessable:
        texts.insert(0, _text(REASON, disc["reason"]))
    text = disc_tracking_text(disc)
    drawn = outline is not None and bool(measurements)
    if drawn:
        assert outline is not None
        outline_first(measurements[0], outline)
    common = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=viewer_tracking_identifier(text) if drawn else text
        ),
        finding_type=DISC_FINDING,
        algorithm_id=disc_algorithm(models, disc) if learned else None,
        finding_sites=[hd.sr.FindingSite(disc_site(level))],
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
    )
    group: hd.sr.MeasurementsAndQualitativeEvaluations
    if outline is not None and not measurements:
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=outline.region(), **common
        )
    elif segment is not None and outline is None:
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=segment, **common
        )
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    group[0].ContentSequence.append(comment(text))
    group[0].ContentSequence.extend(texts)
    return group


def disc_groups(
    findings: Mapping,
    tracking_uid: Callable[[str], str],
    segments: Mapping[str, hd.sr.ReferencedSegment],
    locator: SliceLocator | None = None,
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """Groups of every entry of ``findings["disc_findings"]``, in the given order; each
    drawn where its level's disc heights were measured when ``locator`` is given."""
    models = findings.get("models") or {}
    levels = {str(rec.get("level")): rec for rec in findings.get("levels") or []}
    groups = []
    for disc in check_discs(findings.get("disc_findings") or []):
        level = str(disc["level"])
        outline = disc_outline(levels.get(level), locator) if locator is not None else None
        groups.append(
            disc_group(
                disc,
                tracking_uid(f"tracking/disc/{level}"),
                models,
                segments.get(level),
                outline,
            )
        )
    return groups


def abbreviations() -> dict[str, str]:
    """findings.json key -> key image abbreviation of each binary finding."""
    return {key: abbr for key, (_, _, abbr) in BINARY.items()}


__all__ = [
    "BINARY",
    "DISC_GRADER_KIND",
    "abbreviations",
    "check_discs",
    "disc_group",
    "disc_groups",
    "disc_outline",
    "disc_tracking_text",
    "present_findings",
    "validate_disc",
]
