"""The registered segmenter on real held-out slices and on a synthetic study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.segmentation import data as seg_data
from models.segmentation.evaluate import dice_per_class
from models.segmentation.infer import Segmenter, resolve_device
from models.study import Volume


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.load(device="cpu")


def _volume_from_slices(images: np.ndarray, spacing: float, transpose: bool) -> Volume:
    """Canonical slices as a DICOM-style sagittal volume (rows A->P, cols head->feet)."""
    affine = np.eye(4)
    affine[:3, 0] = [-0.9, 0.0, 0.0]
    if transpose:
        images = np.swapaxes(images, 1, 2)
        affine[:3, 1] = [0.0, spacing, 0.0]
        affine[:3, 2] = [0.0, 0.0, -spacing]
    else:
        affine[:3, 1] = [0.0, 0.0, -spacing]
        affine[:3, 2] = [0.0, spacing, 0.0]
    uids = tuple(f"2.25.{i + 1}" for i in range(len(images)))
    return Volume("sag_t2", "2.25.99", np.ascontiguousarray(images), affine, uids)


def test_card_describes_held_out_split(segmenter: Segmenter):
    card = segmenter.card
    assert card["name"] == "segmentation" and len(card["sha256"]) == 64
    split = seg_data.spider_split(list(seg_data.spider_patients()))
    assert card["split"]["test"] == list(split.test)
    assert not set(card["split"]["test"]) & set(card["split"]["train"])


@pytest.mark.parametrize("transpose", [False, True])
def test_held_out_patient_dice_any_orientation(segmenter: Segmenter, transpose: bool):
    patient = segmenter.card["split"]["test"][0]
    real = seg_data.load_spider_patient(patient, max_slices=4)
    volume = _volume_from_slices(real.images, 0.94, transpose)
    labels = segmenter.segment(volume)
    assert labels.dtype == np.uint8 and labels.shape == volume.array.shape
    truth = np.swapaxes(real.labels, 1, 2) if transpose else real.labels
    dice = dice_per_class(labels, truth)
    assert dice["vertebra"] > 0.8 and dice["disc"] > 0.7 and dice["canal"] > 0.7, dice


def test_finer_clinical_grid_is_resampled_back(segmenter: Segmenter):
    """A 0.47 mm grid (twice the SPIDER resolution) comes back at 0.47 mm, labels aligned."""
    patient = segmenter.card["split"]["test"][1]
    real = seg_data.load_spider_patient(patient, max_slices=2)
    fine = np.repeat(np.repeat(real.images, 2, axis=1), 2, axis=2)
    labels = segmenter.segment(_volume_from_slices(fine, 0.47, transpose=True))
    assert labels.shape == (2, fine.shape[2], fine.shape[1])
    coarse = np.swapaxes(labels, 1, 2)[:, ::2, ::2]
    dice = dice_per_class(coarse, real.labels)
    assert min(dice.values()) > 0.7, dice


def test_bad_inputs_are_rejected(segmenter: Segmenter):
    axial = np.eye(4)
    axial[:3, :3] = [[0, 1, 0], [0, 0, 1], [4, 0, 0]]  # rows along x, columns along y
    volume = Volume("ax_t2", "2.25.1", np.zeros((2, 32, 32), np.float32), axial, ("1", "2"))
    with pytest.raises(ValueError, match="not a sagittal"):
        segmenter.segment(volume)
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")


def test_synthetic_study_dice(segmenter: Segmenter, tmp_path: Path):
    if not seg_data.synthetic_available():
        pytest.skip("models.synth is not in this checkout yet")
    from models.synth import generate_study
    from models.volume import load_volume

    generate_study(tmp_path, seed=900001)
    truth_series = seg_data.synthetic_series_keys(tmp_path)
    key = "sag_t2" if "sag_t2" in truth_series else truth_series[0]
    expected = seg_data.load_synthetic_series(tmp_path, key)
    truth = __import__("json").loads((tmp_path / "truth.json").read_text())
    corrupt = set(truth.get("corrupt_files", []))
    files = [tmp_path / f for f in truth["series"][key]["files"] if f not in corrupt]
    volume = load_volume(files, role=key)
    labels = segmenter.segment(volume)
    assert labels.shape == volume.array.shape and labels.dtype == np.uint8
    from models.segmentation.preprocess import Orientation

    dice = dice_per_class(Orientation.from_affine(volume.affine).to_canonical(labels),
                          expected.labels)
    assert dice["vertebra"] > 0.6 and dice["disc"] > 0.5 and dice["canal"] > 0.5, dice
