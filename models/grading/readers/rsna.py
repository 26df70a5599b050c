"""RSNA 2024 Lumbar Spine Degenerative Classification reader.

Layout: ``train.csv`` (study_id + 25 finding columns with grade strings, blank when not
graded), ``train_label_coordinates.csv`` (study_id, series_id, instance_number, condition,
level, x, y: where the reader pointed at each finding), ``train_series_descriptions.csv``
(study_id, series_id, series_description: "Sagittal T1", "Sagittal T2/STIR", "Axial T2"),
DICOM in ``train_images/<study>/<series>/<instance>.dcm``. The coordinates are what make the
data useful for a level-driven grader: they give, per finding, the series and slice the
radiologist used, i.e. the ROI centre.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from lumbar_common.vocabulary import GRADES, LEVELS, finding_keys, rsna_key

#: series_description -> project series role
ROLE_OF_DESCRIPTION: dict[str, str] = {
    "Sagittal T1": "sag_t1", "Sagittal T2/STIR": "sag_t2", "Axial T2": "ax_t2",
}
_CONDITION_OF_TEXT: dict[str, str] = {
    "spinal canal stenosis": "spinal_canal_stenosis",
    "left neural foraminal narrowing": "left_neural_foraminal_narrowing",
    "right neural foraminal narrowing": "right_neural_foraminal_narrowing",
    "left subarticular stenosis": "left_subarticular_stenosis",
    "right subarticular stenosis": "right_subarticular_stenosis",
}


@dataclass(frozen=True)
class Coordinate:
    series_id: str
    instance_number: int
    x: float
    y: float


@dataclass
class RsnaStudy:
    study_id: str
    #: RSNA column -> grade string; unlabelled findings are absent
    labels: dict[str, str] = field(default_factory=dict)
    #: series_id -> role (sag_t1, sag_t2, ax_t2)
    series_roles: dict[str, str] = field(default_factory=dict)
    #: RSNA column -> where the finding was pointed at
    coordinates: dict[str, Coordinate] = field(default_factory=dict)
    image_root: Path | None = None

    def series_files(self, series_id: str) -> list[Path]:
        """Instance files of a series, ordered by instance number (their file name)."""
        if self.image_root is None:
            raise ValueError(f"study {self.study_id}: no train_images folder")
        folder = self.image_root / self.study_id / series_id
        if not folder.is_dir():
            raise ValueError(f"study {self.study_id}: missing series folder {folder}")
        return sorted(folder.glob("*.dcm"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)


def _level_from_text(text: str) -> str:
    level = text.strip().upper().replace("/", "-").replace("_", "-")
    if level not in LEVELS:
        raise ValueError(f"unknown RSNA level {text!r}")
    return level


def _key_from_row(condition: str, level: str) -> str:
    base = _CONDITION_OF_TEXT.get(condition.strip().lower())
    if base is None:
        raise ValueError(f"unknown RSNA condition {condition!r}")
    for cond, side, lv in finding_keys():
        if lv == _level_from_text(level) and base == (f"{side}_{cond}" if side else cond):
            return rsna_key(cond, side, lv)
    raise ValueError(f"no finding for condition {condition!r} at level {level!r}")


def read_rsna(root: str | Path, split: str = "train") -> list[RsnaStudy]:
    """All studies of an RSNA-format folder (``split`` is the file prefix: train or test)."""
    root = Path(root)
    studies: dict[str, RsnaStudy] = {}
    labels_csv = root / f"{split}.csv"
    valid = {rsna_key(c, s, lv) for c, s, lv in finding_keys()}
    if labels_csv.exists():
        with labels_csv.open(newline="") as fh:
            reader = csv.DictReader(fh)
            unknown = set(reader.fieldnames or []) - valid - {"study_id"}
            if unknown:
                raise ValueError(f"{labels_csv}: unknown columns {sorted(unknown)}")
            for row in reader:
                study = studies.setdefault(row["study_id"], RsnaStudy(row["study_id"]))
                for key in valid:
                    grade = (row.get(key) or "").strip()
                    if not grade:
                        continue
                    if grade not in GRADES:
                        raise ValueError(f"{labels_csv}: study {row['study_id']} {key}: "
                                         f"unknown grade {grade!r}")
                    study.labels[key] = grade
    desc_csv = root / f"{split}_series_descriptions.csv"
    if desc_csv.exists():
        with desc_csv.open(newline="") as fh:
            for row in csv.DictReader(fh):
                role = ROLE_OF_DESCRIPTION.get(row["series_description"].strip())
                if role is None:
                    raise ValueError(f"{desc_csv}: unknown series_description "
                                     f"{row['series_description']!r}")
                study = studies.setdefault(row["study_id"], RsnaStudy(row["study_id"]))
                study.series_roles[row["series_id"]] = role
    coord_csv = root / f"{split}_label_coordinates.csv"
    if coord_csv.exists():
        with coord_csv.open(newline="") as fh:
            for row in csv.DictReader(fh):
                study = studies.setdefault(row["study_id"], RsnaStudy(row["study_id"]))
                key = _key_from_row(row["condition"], row["level"])
                study.coordinates[key] = Coordinate(
                    row["series_id"], int(row["instance_number"]), float(row["x"]), float(row["y"])
                )
    if not studies:
        raise ValueError(f"{root}: no {split}.csv / {split}_*.csv files with studies")
    images = root / f"{split}_images"
    for study in studies.values():
        study.image_root = images if images.is_dir() else None
    return [studies[k] for k in sorted(studies, key=lambda s: (len(s), s))]
