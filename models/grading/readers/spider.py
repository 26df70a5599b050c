"""SPIDER lumbar MRI dataset reader (van der Graaf et al., Scientific Data 2024).

Layout: ``images/<n>_<seq>.mha`` and ``masks/<n>_<seq>.mha`` (seq ``t1``, ``t2`` or
``t2_SPACE``), ``overview.csv`` (one row per scan) and ``radiological_gradings.csv``
(one row per patient and disc: Modic, endplates, spondylolisthesis, herniation, narrowing,
bulging, Pfirrmann). Masks already use the SPIDER label values the whole project uses
(:mod:`lumbar_common.vocabulary`), so a case can feed segmentation and the measurement
grader's canal measurements without relabelling.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from lumbar_common.vocabulary import LEVELS, spider_disc_label
from models.grading.readers.metaimage import MetaImage, read_metaimage

SEQUENCES: tuple[str, ...] = ("t1", "t2", "t2_SPACE")
#: radiological_gradings.csv columns read as integers (Pfirrmann is spelled as SPIDER spells it)
GRADING_COLUMNS: tuple[str, ...] = (
    "Modic", "UP endplate", "LOW endplate", "Spondylolisthesis", "Disc herniation",
    "Disc narrowing", "Disc bulging", "Pfirrman grade",
)


@dataclass
class SpiderCase:
    patient: str
    #: sequence -> image path; masks the same
    images: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)
    overview: dict[str, dict[str, str]] = field(default_factory=dict)
    #: level ("L4-L5") -> column -> int grade
    gradings: dict[str, dict[str, int]] = field(default_factory=dict)

    def image(self, sequence: str = "t2") -> MetaImage:
        if sequence not in self.images:
            raise ValueError(f"SPIDER patient {self.patient}: no {sequence!r} image")
        return read_metaimage(self.images[sequence])

    def mask(self, sequence: str = "t2") -> MetaImage:
        if sequence not in self.masks:
            raise ValueError(f"SPIDER patient {self.patient}: no {sequence!r} mask")
        return read_metaimage(self.masks[sequence])


def _split_name(stem: str) -> tuple[str, str]:
    for seq in sorted(SEQUENCES, key=len, reverse=True):
        if stem.endswith("_" + seq):
            return stem[: -len(seq) - 1], seq
    raise ValueError(f"SPIDER file name {stem!r} does not end in one of {SEQUENCES}")


#: SPIDER "IVD label" counts discs from the bottom: 1 = L5-S1 ... 5 = L1-L2
_IVD_TO_LEVEL: dict[int, str] = {spider_disc_label(lv) - 200: lv for lv in LEVELS}


def read_spider(root: str | Path) -> list[SpiderCase]:
    """All cases under a SPIDER root, sorted by patient id."""
    root = Path(root)
    if not (root / "images").is_dir():
        raise ValueError(f"{root} is not a SPIDER folder: no images/ directory")
    cases: dict[str, SpiderCase] = {}
    for sub, attr in (("images", "images"), ("masks", "masks")):
        for path in sorted((root / sub).glob("*.mha")) if (root / sub).is_dir() else []:
            patient, seq = _split_name(path.stem)
            getattr(cases.setdefault(patient, SpiderCase(patient)), attr)[seq] = path
    overview = root / "overview.csv"
    if overview.exists():
        with overview.open(newline="") as fh:
            for row in csv.DictReader(fh):
                name = row.get("new_file_name") or row.get("file_name") or ""
                if not name:
                    raise ValueError(f"{overview}: row without new_file_name: {row}")
                patient, seq = _split_name(Path(name).stem)
                cases.setdefault(patient, SpiderCase(patient)).overview[seq] = dict(row)
    gradings = root / "radiological_gradings.csv"
    if gradings.exists():
        with gradings.open(newline="") as fh:
            for row in csv.DictReader(fh):
                patient = str(row["Patient"]).strip()
                ivd = int(row["IVD label"])
                if ivd not in _IVD_TO_LEVEL:
                    continue  # thoracolumbar discs (T12-L1 and above) are outside our levels
                grades = {}
                for col in GRADING_COLUMNS:
                    if col in row and str(row[col]).strip() != "":
                        grades[col] = int(float(row[col]))
                cases.setdefault(patient, SpiderCase(patient)).gradings[_IVD_TO_LEVEL[ivd]] = grades
    return [cases[k] for k in sorted(cases, key=lambda s: (len(s), s))]
