"""Readers for the real SPIDER folders: sagittal T2-SPACE slices with masks, and the expert's
per-disc gradings.

Paths default to ``$LUMBAR_NODE_REALDATA`` or ``../shared/realdata`` beside the checkout so
the same code runs on a developer's machine and in CI. Patients, never slices, are the unit
of every split: slices and discs of one patient are strongly correlated.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: SPIDER T2-SPACE is 0.47 mm in-plane; the shared PNGs are downsampled by 2. Consecutive
#: slices are 0.9 mm apart (the 3-D acquisition's through-plane spacing).
T2SPACE_PIXEL_MM = 0.94
T2SPACE_SLICE_MM = 0.9

_T2SPACE_NAME = re.compile(r"^(?P<patient>[^_]+)_t2_SPACE_slice(?P<slice>\d+)\.png$")


def realdata_root() -> Path:
    env = os.environ.get("LUMBAR_NODE_REALDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


@dataclass
class T2SpacePatient:
    """Consecutive sagittal slices of one patient: rows head->feet, columns anterior->posterior."""

    patient: str
    images: np.ndarray  # [slice, row, col] uint8
    labels: np.ndarray  # [slice, row, col] 0 bg, 1 vertebra, 2 disc, 3 canal
    slice_numbers: list[int]
    pixel_mm: tuple[float, float] = (T2SPACE_PIXEL_MM, T2SPACE_PIXEL_MM)
    slice_mm: float = T2SPACE_SLICE_MM


def t2space_patients(root: Path | None = None) -> dict[str, list[tuple[int, Path]]]:
    """Patient id -> [(slice number, image path)], slices ascending."""
    folder = (root or realdata_root() / "spider-t2space-2d") / "images"
    if not folder.is_dir():
        raise FileNotFoundError(f"no SPIDER T2-SPACE slices at {folder}")
    out: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(folder.glob("*.png")):
        match = _T2SPACE_NAME.match(path.name)
        if match is None:
            raise ValueError(f"unexpected SPIDER file name {path.name!r}")
        out.setdefault(match["patient"], []).append((int(match["slice"]), path))
    if not out:
        raise FileNotFoundError(f"no SPIDER T2-SPACE slices in {folder}")
    return {p: sorted(s) for p, s in out.items()}


def load_t2space(patient: str, root: Path | None = None) -> T2SpacePatient:
    from PIL import Image

    base = root or realdata_root() / "spider-t2space-2d"
    slices = t2space_patients(base).get(patient)
    if not slices:
        raise ValueError(f"unknown SPIDER T2-SPACE patient {patient!r}")
    images = np.stack([np.asarray(Image.open(p).convert("L")) for _, p in slices])
    labels = np.stack([np.asarray(Image.open(base / "labels" / p.name)) for _, p in slices])
    if labels.shape != images.shape or labels.max() > 3:
        raise ValueError(f"patient {patient}: masks do not match the slices")
    return T2SpacePatient(patient, images, labels.astype(np.uint8), [n for n, _ in slices])


@dataclass(frozen=True)
class DiscGrading:
    """One disc as the expert graded it (SPIDER ``radiological_gradings.csv``)."""

    patient: str
    level: str
    pfirrmann: int
    modic: int
    endplate_upper: bool
    endplate_lower: bool
    listhesis: bool
    herniation: bool
    narrowing: bool
    bulging: bool

    @property
    def healthy(self) -> bool:
        """Pfirrmann <= 2 with no bulge, herniation, narrowing or slip: a disc that should
        never be called stenotic."""
        return (self.pfirrmann <= 2 and not (self.bulging or self.herniation
                                             or self.listhesis or self.narrowing))


def load_gradings(path: Path | None = None) -> dict[tuple[str, str], DiscGrading]:
    """(patient, level name) -> the expert's grading."""
    path = path or realdata_root() / "spider-midsag" / "gradings.csv"
    out: dict[tuple[str, str], DiscGrading] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            g = DiscGrading(
                patient=row["Patient"].strip(), level=row["level"].strip(),
                pfirrmann=int(row["Pfirrman grade"]), modic=int(row["Modic"]),
                endplate_upper=row["UP endplate"] == "1", endplate_lower=row["LOW endplate"] == "1",
                listhesis=row["Spondylolisthesis"] == "1", herniation=row["Disc herniation"] == "1",
                narrowing=row["Disc narrowing"] == "1", bulging=row["Disc bulging"] == "1")
            out[(g.patient, g.level)] = g
    return out


@dataclass(frozen=True)
class MidsagImage:
    """One mid-sagittal slice: head up, anterior left; rows and columns differ in spacing."""

    patient: str
    sequence: str  # "t1" | "t2"
    path: Path
    row_mm: float
    col_mm: float
    manufacturer: str
    field_strength_t: float
    tr_ms: float
    te_ms: float
    description: str
    slice_thickness_mm: float


def midsag_images(root: Path | None = None) -> list[MidsagImage]:
    base = root or realdata_root() / "spider-midsag"
    out = []
    with (base / "series.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            out.append(MidsagImage(
                patient=row["pid"], sequence=row["sequence"],
                path=base / "images" / f"{row['pid']}_{row['sequence']}.png",
                row_mm=float(row["row_spacing_mm"]), col_mm=float(row["col_spacing_mm"]),
                manufacturer=row["manufacturer"], field_strength_t=float(row["field_strength_t"]),
                tr_ms=float(row["tr_ms"]), te_ms=float(row["te_ms"]),
                description=row["series_description"],
                slice_thickness_mm=float(row["slice_thickness_mm"] or 4.0)))
    return out
