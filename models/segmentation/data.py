"""Training and evaluation data: real SPIDER sagittal slices and synthetic studies.

Everything is held per patient (or per synthetic series) because slices of one patient are
strongly correlated: the split, the Dice and the model selection all work on whole patients.
The held-out test patients are fixed by ``SPLIT_SEED`` and the sorted patient IDs, never by
the training seed, so every training run is scored on the same patients.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.realdata.spider import realdata_root, t2space_patients
from models.segmentation.preprocess import Orientation, spider_to_semantic

#: Real sagittal T2 slices with semantic labels (see ../shared/realdata/README.md).
SPIDER_DIR = realdata_root() / "spider-t2space-2d"
#: SPIDER T2-SPACE is 0.47 mm in-plane, the PNGs are downsampled by 2.
SPIDER_SPACING_MM = (0.94, 0.94)
#: Fixes which patients are held out for testing and validation; independent of training seed.
SPLIT_SEED = 20240
N_TEST_PATIENTS = 6
N_VAL_PATIENTS = 3



@dataclass
class SliceSet:
    """Consecutive sagittal slices of one patient or series, in canonical orientation."""

    key: str
    source: str  # "spider" or "synthetic"
    #: raw grey values, [slice,row,col], rows head->feet, columns anterior->posterior
    images: np.ndarray
    #: semantic classes 0-3, same shape
    labels: np.ndarray
    #: pixel spacing (mm) along rows and columns
    spacing: tuple[float, float]


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def spider_patients(root: Path = SPIDER_DIR) -> dict[str, list[tuple[int, Path]]]:
    """Patient ID -> [(slice number, image path)], slices ascending (one reader for the folder)."""
    return t2space_patients(root)


def _sort_ids(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda p: (len(p), p))


def spider_split(patient_ids: list[str]) -> Split:
    """Fixed patient-level split: sorted IDs permuted by ``SPLIT_SEED``."""
    ids = _sort_ids(list(patient_ids))
    if len(ids) < N_TEST_PATIENTS + N_VAL_PATIENTS + 1:
        raise ValueError(f"need more than {N_TEST_PATIENTS + N_VAL_PATIENTS} patients, got {ids}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(ids))
    test = _sort_ids([ids[i] for i in order[:N_TEST_PATIENTS]])
    val = _sort_ids([ids[i] for i in order[N_TEST_PATIENTS:N_TEST_PATIENTS + N_VAL_PATIENTS]])
    train = _sort_ids([ids[i] for i in order[N_TEST_PATIENTS + N_VAL_PATIENTS:]])
    return Split(tuple(train), tuple(val), tuple(test))


def load_spider_patient(patient: str, root: Path = SPIDER_DIR,
                        max_slices: int | None = None) -> SliceSet:
    """All slices of one SPIDER patient (the PNGs are already head-up, anterior-left)."""
    from PIL import Image

    slices = spider_patients(root).get(patient)
    if not slices:
        raise ValueError(f"unknown SPIDER patient {patient!r}")
    if max_slices is not None:
        middle = len(slices) // 2
        start = max(0, middle - max_slices // 2)
        slices = slices[start:start + max_slices]
    images, labels = [], []
    for _, path in slices:
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        label = np.asarray(Image.open(root / "labels" / path.name))
        if label.shape != image.shape:
            raise ValueError(f"{path.name}: label shape {label.shape} != image {image.shape}")
        if label.max() > 3:
            raise ValueError(f"{path.name}: label values {np.unique(label).tolist()} exceed 3")
        images.append(image)
        labels.append(label.astype(np.uint8))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"patient {patient}: slices of different sizes {shapes}")
    return SliceSet(patient, "spider", np.stack(images), np.stack(labels), SPIDER_SPACING_MM)


def load_synthetic_series(study_dir: Path, series_key: str) -> SliceSet:
    """One labelled sagittal series of a synthetic study, turned to canonical orientation."""
    from models.volume import load_volume

    truth = json.loads((study_dir / "truth.json").read_text())
    series = truth["series"].get(series_key)
    if series is None or not series.get("label_file"):
        raise ValueError(f"{study_dir}: series {series_key!r} has no label file")
    corrupt = set(truth.get("corrupt_files", []))
    files = [study_dir / f for f in series["files"] if f not in corrupt]
    volume = load_volume(files, role=series_key)
    with np.load(study_dir / series["label_file"]) as npz:
        labels = npz["labels"]
        uids = [str(u) for u in npz["sop_instance_uids"]]
    index = {uid: i for i, uid in enumerate(uids)}
    missing = [u for u in volume.sop_instance_uids if u not in index]
    if missing:
        raise ValueError(f"{study_dir}/{series_key}: slices without labels: {missing[:3]}")
    picked = labels[[index[u] for u in volume.sop_instance_uids]]
    if picked.shape != volume.array.shape:
        raise ValueError(
            f"{study_dir}/{series_key}: labels {picked.shape} != pixels {volume.array.shape}"
        )
    orientation = Orientation.from_affine(volume.affine)
    return SliceSet(
        key=f"{truth.get('patient', {}).get('id', study_dir.name)}:{series_key}",
        source="synthetic",
        images=orientation.to_canonical(volume.array.astype(np.float32)),
        labels=orientation.to_canonical(spider_to_semantic(picked)),
        spacing=orientation.spacing,
    )


def synthetic_series_keys(study_dir: Path) -> list[str]:
    """Sagittal series of a synthetic study that carry labels."""
    truth = json.loads((study_dir / "truth.json").read_text())
    return sorted(k for k, s in truth["series"].items() if s.get("label_file"))


def generate_synthetic(out_root: Path, seeds: list[int]) -> list[Path]:
    """Write (or reuse) synthetic studies ``out_root/seed_<n>`` for the given seeds."""
    from models.synth import generate_study

    dirs = []
    for seed in seeds:
        study_dir = out_root / f"seed_{seed:05d}"
        if not (study_dir / "truth.json").exists():
            generate_study(study_dir, seed=seed)
        dirs.append(study_dir)
    return dirs


def synthetic_available() -> bool:
    """Whether the synthetic study generator is installed in this checkout."""
    try:
        from models.synth import generate_study  # noqa: F401
    except ImportError:
        return False
    return True
