"""The NUM items of a measurement group, always the same ones in the same order.

3D Slicer builds its measurement table from the first group's NUMs, so every group carries
the probability and then every measurement name that occurs in the study, in a fixed order.
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

from models.reports.sr.codes import DISC_CODES, LEVEL_CODES, VERTEBRA_CODES, private
from models.reports.sr.geometry import SliceLocator


@dataclass(frozen=True)
class MeasurementKind:
    name: Code | CodedConcept
    unit: Code | CodedConcept
    #: "canal", "disc", "vertebra" (the one above the disc) or "level": the finding site
    site: str | None
    modifier: Code | None = None


#: Measurements the node reports, in the order they appear in every group.
KNOWN: Final[dict[str, MeasurementKind]] = {
    "canal_ap_diameter": MeasurementKind(codes.SCT.Diameter, codes.UCUM.Millimeter, "canal"),
    "disc_height_anterior": MeasurementKind(
        codes.DCM.Height, codes.UCUM.Millimeter, "disc", codes.SCT.Anterior
    ),
    "disc_height_posterior": MeasurementKind(
        codes.DCM.Height, codes.UCUM.Millimeter, "disc", codes.SCT.Posterior
    ),
    "vertebral_body_height": MeasurementKind(codes.DCM.Height, codes.UCUM.Millimeter, "vertebra"),
    "anterolisthesis": MeasurementKind(
        private("LSTEN-LISTHESIS", "Anterolisthesis"), codes.UCUM.Millimeter, "level"
    ),
}


def measurement_names(levels: Sequence[Mapping]) -> list[str]:
    """Every measurement name of the study: the known ones first, then others sorted."""
    seen = {str(m.get("name")) for level in levels for m in level.get("measurements", [])}
    return [n for n in KNOWN if n in seen] + sorted(seen - set(KNOWN))


def kind_of(name: str, unit: str) -> MeasurementKind:
    if name in KNOWN:
        return KNOWN[name]
    if not name or not unit:
        raise ValueError(f"measurement needs a name and a unit, got {name!r} / {unit!r}")
    # a name the node has no standard concept for: a private code derived from the name
    value = "LM-" + hashlib.sha1(name.encode()).hexdigest()[:10].upper()
    return MeasurementKind(private(value, name[:64]), CodedConcept(unit, "UCUM", unit), None)


def build_measurement(
    name: str,
    record: Mapping | None,
    level: str,
    locator: SliceLocator,
    with_coordinates: bool,
) -> hd.sr.Measurement | None:
    """One NUM, or None where the level has no value (``record`` None or without value).

    ``with_coordinates`` attaches the measurement line as an INFERRED FROM SCOORD, which
    TID 1501 groups allow and ROI groups (TID 1410/1411) forbid.
    """
    if record is None or record.get("value") is None:
        return None
    kind = kind_of(name, str(record.get("unit", "")))
    sites = _sites(kind, level, record)
    try:
        value = float(record["value"])
    except (TypeError, ValueError):
        raise ValueError(f"measurement {name!r} at {level} has value {record['value']!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"measurement {name!r} at {level} has value {record['value']!r}")
    if name in KNOWN and record.get("unit") != kind.unit.value:
        raise ValueError(
            f"measurement {name!r} at {level} has unit {record.get('unit')!r}, expected mm"
        )
    coordinates = None
    points = record.get("points_lps")
    if points and with_coordinates:
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
        name=kind.name,
        value=value,
        unit=kind.unit,
        finding_sites=sites or None,
        referenced_coordinates=coordinates,
    )


def _sites(kind: MeasurementKind, level: str, record: Mapping) -> list[hd.sr.FindingSite]:
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
    return []
