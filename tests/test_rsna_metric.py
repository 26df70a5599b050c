"""The RSNA metric and LSS scores against values worked out by hand."""

import math

import numpy as np
import pytest

from models.grading.calibration import fit_temperature, nll, softmax
from models.grading.metric import (
    lss_scores,
    rsna_score,
    uniform_predictions,
    weighted_log_loss,
)


def test_weighted_log_loss_by_hand():
    # severe (w4) predicted 0.5, normal (w1) predicted 0.8
    got = weighted_log_loss(["Severe", "Normal/Mild"], np.array([[0.2, 0.3, 0.5], [0.8, 0.1, 0.1]]))
    assert got == pytest.approx((4 * -math.log(0.5) + -math.log(0.8)) / 5)


def test_rsna_score_two_studies_by_hand():
    truth = {
        "A": {"spinal_canal_stenosis_l1_l2": "Severe", "spinal_canal_stenosis_l2_l3": "Normal/Mild",
              "left_neural_foraminal_narrowing_l4_l5": "Moderate"},
        "B": {"spinal_canal_stenosis_l1_l2": "Moderate", "right_subarticular_stenosis_l5_s1": ""},
    }
    pred = {
        "A": {"spinal_canal_stenosis_l1_l2": [0.2, 0.3, 0.5],
              "spinal_canal_stenosis_l2_l3": [0.8, 0.1, 0.1],
              "left_neural_foraminal_narrowing_l4_l5": [0.25, 0.5, 0.25]},
        "B": {"spinal_canal_stenosis_l1_l2": [0.3, 0.6, 0.1]},
    }
    s = rsna_score(truth, pred)
    spinal = (4 * -math.log(0.5) - math.log(0.8) - 2 * math.log(0.6)) / 7
    foraminal = -math.log(0.5)
    # any severe: A is severe (weight 4, p = max p_severe = 0.5), B is not (weight 2, p = 0.1)
    any_severe = (4 * -math.log(0.5) + 2 * -math.log(0.9)) / 6
    assert s["spinal_canal_stenosis"] == pytest.approx(spinal)
    assert s["neural_foraminal_narrowing"] == pytest.approx(foraminal)
    assert "subarticular_stenosis" not in s  # only an unlabelled (blank) row
    assert s["any_severe_spinal"] == pytest.approx(any_severe)
    assert s["score"] == pytest.approx((spinal + foraminal + any_severe) / 3)


def test_uniform_baseline_is_ln3_per_group():
    truth = {"A": {"spinal_canal_stenosis_l1_l2": "Moderate",
                   "left_subarticular_stenosis_l3_l4": "Severe"}}
    s = rsna_score(truth, uniform_predictions(truth))
    assert s["spinal_canal_stenosis"] == pytest.approx(math.log(3))
    assert s["subarticular_stenosis"] == pytest.approx(math.log(3))
    assert s["any_severe_spinal"] == pytest.approx(-math.log(2 / 3))


def test_missing_prediction_and_bad_grade_are_errors():
    truth = {"A": {"spinal_canal_stenosis_l1_l2": "Severe"}}
    with pytest.raises(ValueError, match="no prediction"):
        rsna_score(truth, {"A": {}})
    with pytest.raises(ValueError, match="unknown grade"):
        rsna_score({"A": {"spinal_canal_stenosis_l1_l2": "Bad"}},
                   {"A": {"spinal_canal_stenosis_l1_l2": [1, 0, 0]}})
    with pytest.raises(ValueError, match="not an RSNA finding"):
        rsna_score({"A": {"spinal_stenosis_l1_l2": "Severe"}}, {"A": {}})


def test_lss_accuracy_and_macro_f1_by_hand():
    got = lss_scores([0, 0, 1, 2, 3, 3], [0, 1, 1, 2, 3, 0])
    assert got["accuracy"] == pytest.approx(4 / 6)
    # per-class F1: 0 -> 1/2, 1 -> 2/3, 2 -> 1, 3 -> 2/3
    assert got["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 1 + 2 / 3) / 4)


def test_temperature_scaling_improves_validation_loss():
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 3, n)
    # an over-confident model: right 70 % of the time but with logits scaled x6
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, 3, n))
    logits = 6.0 * np.eye(3)[pred] + rng.normal(0, 0.5, (n, 3))
    t = fit_temperature(logits[:300], y[:300])
    assert t > 1.5
    assert nll(logits[300:], y[300:], t) < nll(logits[300:], y[300:], 1.0) - 0.3
    assert np.argmax(softmax(logits, t), 1).tolist() == np.argmax(logits, 1).tolist()


def test_prior_offsets_undo_an_enriched_training_prior():
    from models.grading.calibration import fit_temperature_bias

    rng = np.random.default_rng(1)
    n = 900
    # validation at natural prevalence (mostly normal), logits from a model that learned a
    # flat prior: the class evidence is right, the prior is not
    y = rng.choice(3, n, p=[0.85, 0.1, 0.05])
    logits = 1.5 * np.eye(3)[y] + rng.normal(0, 1.0, (n, 3))
    t_only = fit_temperature(logits[:450], y[:450])
    t, bias = fit_temperature_bias(logits[:450], y[:450])
    assert bias[0] == 0.0 and bias[1] < 0 and bias[2] < 0
    from models.grading.calibration import apply_calibration

    def held_out(p):
        w = np.asarray([1.0, 2.0, 4.0])[y[450:]]
        return float(np.sum(-w * np.log(p[np.arange(450), y[450:]])) / w.sum())

    assert held_out(apply_calibration(logits[450:], t, bias)) < held_out(
        softmax(logits[450:], t_only))
