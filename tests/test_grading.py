"""Grading on a real synthetic study: ROI geometry, graders, and the 25 findings."""

from pathlib import Path

import numpy as np
import pytest

from lumbar_common.vocabulary import CANAL, FORAMEN, GRADES, SUBARTICULAR, finding_keys
from models.grading import grade_study
from models.grading.image_measures import canal_ap_from_labels
from models.grading.measurement_grader import MeasurementGrader, ordinal_probabilities
from models.grading.roi import (
    AXIAL_FIELD_MM,
    FORAMEN_FIELD_MM,
    FORAMEN_OFFSETS_MM,
    canal_crop,
    foramen_crop,
    nearest_axial,
    subarticular_crop,
)
from models.grading.synthetic import load_synthetic


@pytest.fixture(scope="module")
def study(graded_study: Path) -> Path:
    return graded_study


@pytest.fixture(scope="module")
def loaded(study):
    return load_synthetic(study)


def _level(anatomy, name):
    return next(lv for lv in anatomy.levels if lv.level == name)


def _in_crop(crop, point, offsets):
    rel = np.asarray(point) - crop.centre_lps
    u, v, k = (float(rel @ a) for a in crop.axes)
    half = crop.field_mm / 2
    return abs(u) <= half and abs(v) <= half and min(offsets) - 2 <= k <= max(offsets) + 2


def test_foramen_crop_contains_true_foramen_and_has_physical_size(loaded):
    anatomy, truth = loaded
    level = _level(anatomy, "L4-L5")
    for side in ("left", "right"):
        crop = foramen_crop(anatomy, level, side)
        true_centre = truth["levels"]["L4-L5"]["foramen_centre_lps"][side]
        assert _in_crop(crop, true_centre, FORAMEN_OFFSETS_MM), side
        # the far side's foramen is not in this crop's slab
        other_side = "right" if side == "left" else "left"
        other = truth["levels"]["L4-L5"]["foramen_centre_lps"][other_side]
        assert not _in_crop(crop, other, FORAMEN_OFFSETS_MM)
        side_mm = np.linalg.norm(crop.corners_lps[1] - crop.corners_lps[0])
        assert side_mm == pytest.approx(FORAMEN_FIELD_MM)
        assert crop.array.shape[0] == len(FORAMEN_OFFSETS_MM) and crop.coverage == 1.0
        assert crop.series_instance_uid == anatomy.volumes["sag_t1"].series_instance_uid


def test_axial_chosen_by_patient_space_distance(loaded):
    anatomy, truth = loaded
    for level in anatomy.levels:
        found = nearest_axial(anatomy, level.disc_centre_lps, level.cranial_lps)
        assert found is not None, level.level
        vol, dist = found
        # the nearest slice plane is within half a slice gap of the disc centre
        assert dist <= vol.spacing[0] / 2 + 0.5
        crop = subarticular_crop(anatomy, level, "left")
        assert _in_crop(crop, truth["levels"][level.level]["subarticular_centre_lps"]["left"],
                        (-3.0, 3.0))
        assert np.linalg.norm(crop.corners_lps[2] - crop.corners_lps[1]) == pytest.approx(
            AXIAL_FIELD_MM)


def test_canal_ap_from_labels_matches_truth(loaded):
    anatomy, truth = loaded
    for level in anatomy.levels:
        m = canal_ap_from_labels(anatomy, level)
        assert m is not None and m["unit"] == "mm"
        assert m["value"] == pytest.approx(truth["levels"][level.level]["canal_ap_mm"], abs=1.0)
        assert canal_crop(anatomy, level).array.shape == (3, 32, 32)


def test_ordinal_probabilities():
    assert np.argmax(ordinal_probabilities(12.0, 10, 7, 0.6)) == 0
    assert np.argmax(ordinal_probabilities(8.5, 10, 7, 0.6)) == 1
    assert np.argmax(ordinal_probabilities(5.0, 10, 7, 0.6)) == 2
    p = ordinal_probabilities(10.0, 10, 7, 0.6)  # at the threshold: undecided
    assert p[0] == pytest.approx(p[1], abs=0.01) and sum(p) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="severe < moderate"):
        ordinal_probabilities(5.0, 7, 10, 0.6)
    with pytest.raises(ValueError, match="finite"):
        ordinal_probabilities(float("nan"), 10, 7, 0.6)


def test_measurement_grader_on_known_grades(loaded):
    anatomy, _ = loaded
    grader = MeasurementGrader()
    severe = grader.grade(anatomy, _level(anatomy, "L4-L5"), CANAL, None)
    normal = grader.grade(anatomy, _level(anatomy, "L2-L3"), CANAL, None)
    assert GRADES[int(np.argmax(severe.probabilities))] == "Severe"
    assert GRADES[int(np.argmax(normal.probabilities))] == "Normal/Mild"
    assert severe.measurements[0]["name"] == "canal_ap_diameter"
    closed = grader.grade(anatomy, _level(anatomy, "L4-L5"), FORAMEN, "left")
    open_ = grader.grade(anatomy, _level(anatomy, "L4-L5"), FORAMEN, "right")
    assert closed.probabilities[2] > open_.probabilities[2]
    assert open_.measurements[0]["value"] > closed.measurements[0]["value"]


def _check_findings(findings):
    assert len(findings) == 25
    assert {(f["condition"], f["side"], f["level"]) for f in findings} == set(finding_keys())
    for f in findings:
        if f["assessable"]:
            assert f["grade"] in GRADES and f["grader"] in ("learned", "measurement")
            assert len(f["probabilities"]) == 3 and sum(f["probabilities"]) == pytest.approx(
                1.0, abs=1e-3)
            assert f["grade"] == GRADES[int(np.argmax(f["probabilities"]))]
            assert f["model_version"]
            roi = f["roi"]
            assert roi["series_instance_uid"] and isinstance(roi["slice"], int)
            assert np.asarray(roi["corners_lps"]).shape == (4, 3)
        else:
            assert f["grade"] is None and f["reason"]


def test_grade_study_complete(loaded):
    anatomy, _ = loaded
    findings, cards = grade_study(anatomy, "cpu")
    _check_findings(findings)
    assert all(f["assessable"] for f in findings)
    assert "grader_measurement" in cards
    canal = next(f for f in findings if f["condition"] == CANAL and f["level"] == "L4-L5")
    assert canal["grade"] == "Severe"


def test_grade_study_missing_series(study):
    anatomy, _ = load_synthetic(study, roles=("sag_t2",))
    findings, _ = grade_study(anatomy, "cpu")
    _check_findings(findings)
    for f in findings:
        if f["condition"] == CANAL:
            assert f["assessable"]
        else:
            assert not f["assessable"]
            want = "sagittal T1" if f["condition"] == FORAMEN else "axial T2"
            assert want in f["reason"], f["reason"]
    assert {f["condition"] for f in findings if not f["assessable"]} == {FORAMEN, SUBARTICULAR}


def test_grade_study_level_missing(loaded):
    anatomy, _ = loaded
    from dataclasses import replace

    partial = replace(anatomy, levels=[lv for lv in anatomy.levels if lv.level != "L1-L2"])
    findings, _ = grade_study(partial, "cpu")
    _check_findings(findings)
    missing = [f for f in findings if f["level"] == "L1-L2"]
    assert len(missing) == 5 and all("not found" in f["reason"] for f in missing)
