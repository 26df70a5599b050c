"""The NUM items of the report: which measurement is whose evidence, and how it is coded.

A measurement group shows only the measurements behind its own grade (a foramen group the
perineural fat fraction on the sagittal T1, a subarticular group the lateral recess patency
on the axial T2, a canal group the canal AP diameter and area): a radiologist reads the NUMs
of a group as the reason for its grade, so the midline disc heights of the level would be
read as evidence for a foraminal grade they had no part in. Disc heights, the vertebral
body height and listhesis describe the level, not a finding, and go into one group per level
(:data:`LEVEL_NAMES`).

A value the level lacks is left out (never a made-up number or NaN). The standard would
allow a NUM with an empty MeasuredValueSequence and a "Measurement not attempted" qualifier,
but highdicom can neither build nor read such a NUM, so the SR could not be read back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from lumbar_common.vocabulary import CANAL, FORAMEN, SUBARTICULAR
from models.reports.sr.codes import (
    DISC_CODES,
    LATERALITY,
    LEVEL_CODES,
    NO_UNITS,
    VERTEBRA_CODES,
    private,
)
from models.reports.sr.geometry import SliceLocator


@dataclass(frozen=True)
class MeasurementKind:
    name: Code | CodedConcept
    unit: Code | CodedConcept
    #: "canal", "disc", "vertebra" (the one above the disc), "level" or "side" (the level
    #: on the finding's side): the finding site
    site: str | None
    modifier: Code | None = None


ANTEROLISTHESIS: Final = private("LSTEN-ANTEROLISTH", "Anterolisthesis")
RETROLISTHESIS: Final = private("LSTEN-RETROLISTH", "Retrolisthesis")
MM2: Final = CodedConcept(value="mm2", scheme_designator="UCUM", meaning="mm2")

#: Measurements the node reports, in the order they appear in a group.
KNOWN: Final[dict[str, MeasurementKind]] = {
    "canal_ap_diameter": MeasurementKind(codes.SCT.Diameter, codes.UCUM.Millimeter, "canal"),
    "canal_area": MeasurementKind(codes.SCT.Area, MM2, "canal"),
    "perineural_fat_fraction": MeasurementKind(
        private("LSTEN-PNFAT", "Perineural fat fraction"), NO_UNITS, "side"
    ),
    "lateral_recess_patency": MeasurementKind(
        private("LSTEN-LRPATENCY", "Lateral recess patency"), NO_UNITS, "side"
    ),
    # three heights of a level: each its own concept, since viewers label a NUM by its
    # concept name alone and three "Height" rows cannot be told apart; the finding site
    # (disc with an anterior/posterior modifier, or the vertebra) says the same in codes
    "disc_height_anterior": MeasurementKind(
        private("LSTEN-DISCH-ANT", "Anterior disc height"),
        codes.UCUM.Millimeter,
        "disc",
        codes.SCT.Anterior,
    ),
    "disc_height_posterior": MeasurementKind(
        private("LSTEN-DISCH-POST", "Posterior disc height"),
        codes.UCUM.Millimeter,
        "disc",
        codes.SCT.Posterior,
    ),
    "vertebral_body_height": MeasurementKind(
        private("LSTEN-VBODYH", "Vertebral body height"), codes.UCUM.Millimeter, "vertebra"
    ),
    # named by direction when built (see listhesis_kind); the signed name is "listhesis",
    # "anterolisthesis" the name older findings used for the same signed value
    "listhesis": MeasurementKind(ANTEROLISTHESIS, codes.UCUM.Millimeter, "level"),
    "anterolisthesis": MeasurementKind(ANTEROLISTHESIS, codes.UCUM.Millimeter, "level"),
}
LISTHESIS_NAMES: Final = ("listhesis", "anterolisthesis")
#: Measurements of a level's morphology: never the evidence of a graded finding.
LEVEL_NAMES: Final = (
    "disc_height_anterior",
    "disc_height_posterior",
    "vertebral_body_height",
    *LISTHESIS_NAMES,
)
#: What an older findings dict without per-finding evidence shows for each condition,
#: taken from the level's measurements.
EVIDENCE_NAMES: Final[dict[str, tuple[str, ...]]] = {
    CANAL: ("canal_ap_diameter", "canal_area"),
    FORAMEN: ("perineural_fat_fraction",),
    SUBARTICULAR: ("lateral_recess_patency",),
}


def ordered(records: Sequence[Mapping]) -> list[Mapping]:
    """Records in :data:`KNOWN` order, then the others by name; one per name (first wins)."""
    by_name: dict[str, Mapping] = {}
    for record in records:
        by_name.setdefault(str(record.get("name")), record)
    known = [by_name[n] for n in KNOWN if n in by_name]
    return known + [by_name[n] for n in sorted(set(by_name) - set(KNOWN))]


def finding_evidence(finding: Mapping, level_record: Mapping | None) -> list[Mapping]:
    """The measurements behind one finding's grade, in :data:`KNOWN` order.

    ``finding["measurements"]`` (the deciding grader's evidence) when present, with the
    measurement grader's ``explanation`` measurements added where the learned grader
    decided; a findings dict from before per-finding evidence falls back to the level's
    measurements of the condition (:data:`EVIDENCE_NAMES`). Level morphometry is dropped
    even if a grader listed it.
    """
    records = list(finding.get("measurements") or [])
    explanation = finding.get("explanation") or {}
    records += list(explanation.get("measurements") or [])
    if finding.get("measurements") is None and not records:
        names = EVIDENCE_NAMES.get(str(finding.get("condition")), ())
        records = [
            m for m in (level_record or {}).get("measurements", []) if m.get("name") in names
        ]
    return [r for r in ordered(records) if r.get("name") not in LEVEL_NAMES]


def level_measurements(level_record: Mapping | None) -> list[Mapping]:
    """The level's morphometry (:data:`LEVEL_NAMES`), in :data:`KNOWN` order."""
    records = (level_record or {}).get("measurements", [])
    return [r for r in ordered(records) if r.get("name") in LEVEL_NAMES]


def kind_of(name: str, unit: str) -> MeasurementKind:
    if name in KNOWN:
        return KNOWN[name]
    if not name or not unit:
        raise ValueError(f"measurement needs a name and a unit, got {name!r} / {unit!r}")
    # a name the node has no standard concept for: a private code derived from the name
    value = "LM-" + hashlib.sha1(name.encode()).hexdigest()[:10].upper()
    return MeasurementKind(private(value, name[:64]), CodedConcept(unit, "UCUM", unit), None)


def listhesis_value(record: Mapping, value: float) -> tuple[CodedConcept, float]:
    """(concept, non-negative value) of a signed listhesis: positive is anterolisthesis of
    the upper vertebra, negative retrolisthesis. ``direction`` names a zero slip."""
    if value > 0:
        return ANTEROLISTHESIS, value
    if value < 0:
        return RETROLISTHESIS, -value
    direction = str(record.get("direction") or "anterolisthesis")
    return (RETROLISTHESIS if direction == "retrolisthesis" else ANTEROLISTHESIS), 0.0


def build_measurement(
    name: str,
    record: Mapping | None,
    level: str,
    locator: SliceLocator,
    with_coordinates: bool,
    side: str | None = None,
) -> hd.sr.Measurement | None:
    """One NUM, or None where there is no value (``record`` None or without value).

    ``with_coordinates`` attaches the measurement line as an INFERRED FROM SCOORD, which
    TID 1501 groups allow and ROI groups (TID 1410/1411) forbid.
    """
    if record is None or record.get("value") is None:
        return None
    kind = kind_of(name, str(record.get("unit", "")))
    sites = _sites(kind, level, side, record)
    try:
        value = float(record["value"])
    except (TypeError, ValueError):
        raise ValueError(f"measurement {name!r} at {level} has value {record['value']!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"measurement {name!r} at {level} has value {record['value']!r}")
    if name in KNOWN and record.get("unit") != kind.unit.value:
        raise ValueError(
            f"measurement {name!r} at {level} has unit {record.get('unit')!r}, "
            f"expected {kind.unit.value!r}"
        )
    concept = kind.name
    if name in LISTHESIS_NAMES:
        concept, value = listhesis_value(record, value)
    coordinates = None
    points = record.get("points_lps")
    if points and with_coordinates and record.get("series_instance_uid"):
        source, data = locator.pixel_points(
            record.get("series_instance_uid"), record.get("slice"), points
        )
        coordinates = [
            hd.sr.CoordinatesForMeasurement(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE
                if len(data) > 1
                else hd.sr.GraphicTypeValues.POINT,
                graphic_data=data if len(data) > 1 else data[0],
                source_image=source,
            )
        ]
    return hd.sr.Measurement(
        name=concept,
        value=value,
        unit=kind.unit,
        finding_sites=sites or None,
        referenced_coordinates=coordinates,
    )


def _sites(
    kind: MeasurementKind, level: str, side: str | None, record: Mapping
) -> list[hd.sr.FindingSite]:
    if kind.site == "canal":
        return [hd.sr.FindingSite(codes.SCT.VertebralCanal)]
    if kind.site == "disc":
        return [hd.sr.FindingSite(DISC_CODES[level], topographical_modifier=kind.modifier)]
    if kind.site == "vertebra":
        vertebra = str(record.get("vertebra") or level.split("-")[0])
        if vertebra not in VERTEBRA_CODES:
            raise ValueError(f"measurement {record.get('name')!r} names vertebra {vertebra!r}")
        return [hd.sr.FindingSite(VERTEBRA_CODES[vertebra])]
    if kind.site == "level":
        return [hd.sr.FindingSite(LEVEL_CODES[level])]
    if kind.site == "side":
        return [hd.sr.FindingSite(LEVEL_CODES[level], laterality=LATERALITY.get(side or ""))]
    return []
