"""Calibration never changes the grade the network chose; only its confidence."""

from __future__ import annotations

import numpy as np
import pytest

from models.grading.calibration import (
    apply_calibration,
    calibrated,
    fit_group_temperatures,
    softmax,
)

#: the foraminal calibration of the previous grader weights (temperature + prior offsets)
OLD_FORAMEN = {"temperature": 0.9709, "bias": [0.0, -0.114, -2.517]}
RAW = np.array([0.0, 0.5, 2.0])  # the network says Severe


def test_offsets_alone_would_turn_severe_into_moderate():
    """The behaviour that was fixed, stated exactly: unconstrained offsets flip the grade."""
    p = apply_calibration(RAW, OLD_FORAMEN["temperature"], OLD_FORAMEN["bias"],
                          preserve_argmax=False)
    assert int(np.argmax(p)) == 1


def test_default_calibration_keeps_the_raw_argmax():
    p = apply_calibration(RAW, OLD_FORAMEN["temperature"], OLD_FORAMEN["bias"])
    assert int(np.argmax(p)) == int(np.argmax(RAW)) == 2
    # that input falls back to the temperature alone
    np.testing.assert_allclose(p, softmax(RAW, OLD_FORAMEN["temperature"]))
    # an input the offsets do not flip keeps them
    mild = np.array([3.0, 0.5, 0.0])
    q = apply_calibration(mild, 1.0, OLD_FORAMEN["bias"])
    np.testing.assert_allclose(q, softmax(mild + np.asarray(OLD_FORAMEN["bias"])))


def test_temperature_never_changes_the_argmax():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (2000, 3))
    for t in (0.5, 0.9709, 1.0, 4.0, 20.0):
        p = calibrated(logits, t)
        assert (p.argmax(1) == logits.argmax(1)).all()
        np.testing.assert_allclose(p.sum(1), 1.0)
    with pytest.raises(ValueError, match="positive"):
        calibrated(RAW, 0.0)


def test_batch_mixes_kept_and_fallen_back_rows():
    batch = np.stack([RAW, np.array([3.0, 0.5, 0.0])])
    p = apply_calibration(batch, 1.0, [0.0, -0.5, -3.0])
    assert p.argmax(1).tolist() == [2, 0]


def test_group_temperatures_carry_no_offsets():
    rng = np.random.default_rng(0)
    n = 300
    y = rng.choice(3, (n, 5), p=[0.8, 0.15, 0.05])
    logits = 4.0 * np.eye(3)[y] + rng.normal(0, 1, (n, 5, 3))
    y_lss = rng.integers(0, 4, (n, 2))
    lss_logits = 3.0 * np.eye(4)[y_lss] + rng.normal(0, 1, (n, 2, 4))
    data = {"y": y, "y_lss": y_lss, "presence": np.ones((n, 2), np.float32)}
    calib = fit_group_temperatures(data, logits, lss_logits,
                                   ("canal", "foramen", "foramen", "subarticular",
                                    "subarticular"))
    assert set(calib) == {"canal", "foramen", "subarticular", "lss"}
    for group in calib.values():
        assert set(group) == {"temperature"} and group["temperature"] > 0


def test_shipped_grader_ignores_prior_offsets():
    """Even a checkpoint carrying offsets gets the network's own grade back."""
    from models.grading.learned_grader import LearnedGrader

    grader = LearnedGrader.load("cpu")
    assert all(set(c) == {"temperature"} for c in grader.calibration.values())
    grader.calibration = {"foramen": dict(OLD_FORAMEN)}
    p = grader._calibrated(RAW, "foramen")
    assert int(np.argmax(p)) == 2
    np.testing.assert_allclose(p, softmax(RAW, OLD_FORAMEN["temperature"]))
