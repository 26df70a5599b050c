"""Disc labels from radiologists' reviews in SPIDER's gradings layout, the one the disc
grader trains on (`gradings.csv` of the spider-midsag data, read by
`models.realdata.spider.load_gradings`): one row per disc with the expert's values.

A review gives only the findings the radiologist looked at, so a row holds the confirmed
(the node's) or corrected value of each reviewed finding and leaves the others empty:
an unreviewed finding is unknown, never "absent". The patient is the export's anonymised
`study_id` (see `studies.csv` for the study it stands for), so no patient identifier
leaves the node in a label file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

#: SPIDER's columns in its order (Pfirrmann spelt as SPIDER spells it), plus `level`
COLUMNS = ("Patient", "IVD label", "Modic", "UP endplate", "LOW endplate", "Spondylolisthesis",
           "Disc herniation", "Disc narrowing", "Disc bulging", "Pfirrman grade", "level")
#: findings.json disc finding -> SPIDER column
FINDING_COLUMNS = {"modic": "Modic", "endplate_upper": "UP endplate",
                   "endplate_lower": "LOW endplate", "spondylolisthesis": "Spondylolisthesis",
                   "herniation": "Disc herniation", "narrowing": "Disc narrowing",
                   "bulging": "Disc bulging", "pfirrmann": "Pfirrman grade"}
#: SPIDER numbers discs from the sacrum up: 1 = L5-S1 (0 = the S1-S2 disc of a
#: transitional vertebra)
IVD_LABELS = {"S1-S2": 0, "L5-S1": 1, "L4-L5": 2, "L3-L4": 3, "L2-L3": 4, "L1-L2": 5,
              "T12-L1": 6, "T11-T12": 7, "T10-T11": 8, "T9-T10": 9}
PRESENCE_CODES = {"present": "1", "absent": "0"}


def cell(finding: str, value: str) -> str:
    """A reviewed value as SPIDER writes it: grades and types as numbers, presence 0/1."""
    return value if finding in ("pfirrmann", "modic") else PRESENCE_CODES[value]


def write_gradings(path: Path, labels: Iterable[tuple[str, str, str, str]]) -> int:
    """`labels`: (patient, level, finding, reviewed value) of each reviewed disc finding.
    Writes one row per (patient, disc), sorted by patient and IVD label; returns the rows."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for patient, level, finding, value in labels:
        column = FINDING_COLUMNS.get(finding)
        if column is None:
            continue
        row = rows.setdefault((patient, level), {"Patient": patient, "level": level, "IVD label":
                                                 str(IVD_LABELS.get(level, ""))})
        row[column] = cell(finding, value)

    def order(key: tuple[str, str]) -> tuple[int, str, int, str]:
        patient, level = key
        return (int(patient) if patient.isdigit() else 0, patient,
                IVD_LABELS.get(level, 99), level)

    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        for key in sorted(rows, key=order):
            writer.writerow(rows[key])
    return len(rows)
