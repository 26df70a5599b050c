"""Canal grading: absolute cut-offs, Moderate only where the canal is also focally narrowed."""

from __future__ import annotations

import numpy as np
import pytest

from lumbar_common.vocabulary import GRADES
from models.grading.measurement_grader import MeasurementGrader


def _grade(ap: float, ratio: float | None) -> str:
    probs = MeasurementGrader().canal_probabilities(ap, ratio)
    assert abs(sum(probs) - 1.0) < 1e-9 and min(probs) > 0
    return GRADES[int(np.argmax(probs))]


@pytest.mark.parametrize(("ap", "ratio", "grade"), [
    (8.5, 1.0, "Normal/Mild"),  # developmentally narrow, uniform sac
    (8.5, 0.65, "Moderate"),  # the same width as a focal compression
    (8.5, None, "Moderate"),  # too few levels to compare: absolute cut-off alone
    (5.0, 1.0, "Severe"),  # severe stays absolute
    (13.0, 0.7, "Normal/Mild"),  # relatively narrower but wide in mm
])
def test_canal_rule(ap, ratio, grade):
    assert _grade(ap, ratio) == grade


def test_probabilities_stay_ordinal():
    """A narrower canal is never less likely stenotic, at any ratio."""
    grader = MeasurementGrader()
    for ratio in (None, 0.5, 0.8, 1.1):
        probs = [grader.canal_probabilities(float(ap), ratio) for ap in np.linspace(15, 3, 25)]
        at_least_moderate = [p[1] + p[2] for p in probs]
        severe = [p[2] for p in probs]
        assert np.all(np.diff(at_least_moderate) >= -1e-6)
        assert np.all(np.diff(severe) >= -1e-6)


def test_thresholds_carry_the_relative_rule():
    rule = MeasurementGrader().thresholds["spinal_canal_stenosis"]["relative"]
    assert 0 < rule["ratio_moderate"] < 1 and rule["min_levels"] >= 3


def test_every_cut_off_in_the_thresholds_is_used():
    """Cut-offs a reader finds in thresholds.toml must be the ones that grade."""
    t = MeasurementGrader().thresholds
    assert set(t["spinal_canal_stenosis"]) == {"ap_diameter", "relative"}
    assert set(t["neural_foraminal_narrowing"]) == {"fat_fraction"}
    assert set(t["subarticular_stenosis"]) == {"recess_patency"}
