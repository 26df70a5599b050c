"""The segmentation out-of-distribution gate with the shipped weights and fitted card."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from models.levels import label_levels
from models.segmentation import data as seg_data
from models.segmentation.infer import Segmenter
from models.segmentation.ood import level_ood, study_ood
from models.study import Volume

KEYS = {"flagged", "score", "threshold", "reason"}


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.load(device="cpu")


def _volume(images: np.ndarray, spacing: float = 0.94) -> Volume:
    """Canonical slices (rows head->feet, cols anterior->posterior) as a sagittal volume."""
    affine = np.eye(4)
    affine[:3, 0] = [-0.9, 0.0, 0.0]
    affine[:3, 1] = [0.0, 0.0, -spacing]
    affine[:3, 2] = [0.0, spacing, 0.0]
    uids = tuple(f"2.25.{i + 1}" for i in range(len(images)))
    return Volume("sag_t2", "2.25.99", np.ascontiguousarray(images, np.float32), affine, uids)


@pytest.fixture(scope="module")
def real(segmenter: Segmenter) -> tuple[Volume, np.ndarray, np.ndarray]:
    patient = segmenter.card["split"]["val"][-1]
    volume = _volume(seg_data.load_spider_patient(patient, max_slices=8).images)
    labels, confidence = segmenter.segment_with_confidence(volume)
    return volume, labels, confidence


def test_confidence_map_matches_labels(segmenter: Segmenter, real):
    volume, labels, confidence = real
    assert confidence.dtype == np.float32 and confidence.shape == volume.array.shape
    assert np.array_equal(labels, segmenter.segment(volume))
    # max softmax of 4 classes: never below 1/4, never above 1
    assert confidence.min() >= 0.25 - 1e-6 and confidence.max() <= 1.0
    assert np.median(confidence[labels > 0]) > 0.9


def test_real_validation_study_passes(segmenter: Segmenter, real):
    result = study_ood(*real, segmenter.card)
    assert set(result) == KEYS
    assert result["threshold"] == segmenter.card["ood"]["thresholds"]["study"]
    assert not result["flagged"] and result["reason"] is None, result
    assert 0 < result["score"] < result["threshold"]


def test_real_level_passes(segmenter: Segmenter, real):
    volume, labels, confidence = real
    levels = label_levels(volume, labels).levels
    assert levels
    for level in levels:
        result = level_ood(volume, labels, confidence, level.disc_centre_lps, segmenter.card)
        assert result["threshold"] == segmenter.card["ood"]["thresholds"]["level"]
        assert not result["flagged"], (level.level, result)


def test_noise_is_flagged(segmenter: Segmenter):
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (2, 4, 192, 192))
    volume = _volume(np.hypot(noise[0] + 0.5, noise[1]) * 300, 1.0)
    labels, confidence = segmenter.segment_with_confidence(volume)
    result = study_ood(volume, labels, confidence, segmenter.card)
    assert result["flagged"] and result["score"] > result["threshold"]
    assert "out of distribution" in result["reason"]
    centre = volume.index_to_lps(np.array([2, 96, 96]))
    assert level_ood(volume, labels, confidence, centre, segmenter.card)["flagged"]


def test_rotated_real_input_is_flagged(segmenter: Segmenter, real):
    volume = real[0]
    turned = _volume(np.rot90(volume.array, 1, axes=(1, 2)))
    labels, confidence = segmenter.segment_with_confidence(turned)
    result = study_ood(turned, labels, confidence, segmenter.card)
    assert result["flagged"], result


def test_thresholds_come_from_the_card(segmenter: Segmenter, real):
    card = copy.deepcopy(segmenter.card)
    score = study_ood(*real, card)["score"]
    card["ood"]["thresholds"]["study"] = score / 2
    lowered = study_ood(*real, card)
    assert lowered["flagged"] and lowered["threshold"] == score / 2
    assert f"{score / 2:.3f}" in lowered["reason"]
    del card["ood"]
    with pytest.raises(ValueError, match="no fitted 'ood' thresholds"):
        study_ood(*real, card)


def test_bad_inputs_name_the_value(segmenter: Segmenter, real):
    volume, labels, confidence = real
    card = segmenter.card
    with pytest.raises(ValueError, match=r"labels shape \(1, 2, 3\)"):
        study_ood(volume, np.zeros((1, 2, 3), np.uint8), confidence, card)
    with pytest.raises(ValueError, match="confidence must lie in"):
        study_ood(volume, labels, confidence + 1.5, card)
    with pytest.raises(ValueError, match="NaN"):
        study_ood(volume, labels, np.full_like(confidence, np.nan), card)
    with pytest.raises(ValueError, match="classes 0-3"):
        study_ood(volume, labels.astype(np.int16) + 7, confidence, card)
    with pytest.raises(ValueError, match=r"centre_lps \[500.0, 0.0, 0.0\] lies outside"):
        level_ood(volume, labels, confidence, np.array([500.0, 0.0, 0.0]), card)
    with pytest.raises(ValueError, match="3 finite LPS coordinates"):
        level_ood(volume, labels, confidence, np.array([1.0, 2.0]), card)
    bad = copy.deepcopy(card)
    bad["ood"]["thresholds"]["level"] = -1
    with pytest.raises(ValueError, match="'level' must be a positive number, got -1"):
        level_ood(volume, labels, confidence, volume.index_to_lps(np.zeros(3)), bad)
