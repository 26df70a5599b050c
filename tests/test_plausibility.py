"""Values no adult lumbar spine can show are withheld with a reason, never reported."""

from __future__ import annotations

import pytest

from models.plausibility import RANGES, implausible, screen


@pytest.mark.parametrize(("name", "value"), [
    ("disc_height_anterior", -1.3), ("disc_height_posterior", 24.0),
    ("listhesis", -17.1), ("listhesis", 37.7), ("canal_ap_diameter", 0.4),
    ("vertebral_body_height", 2.4),
])
def test_impossible_values_are_withheld_with_the_range(name, value):
    why = implausible(name, value)
    assert why is not None and name in why and "physiological range" in why
    assert str(value) not in why  # the impossible number itself is never printed


@pytest.mark.parametrize(("name", "value"), [
    ("disc_height_anterior", 1.0),  # a collapsed disc is possible
    ("canal_ap_diameter", 3.0),  # so is a severe stenosis
    ("listhesis", 12.0), ("listhesis", -4.0), ("vertebral_body_height", 27.0),
])
def test_disease_stays_inside_the_ranges(name, value):
    assert implausible(name, value) is None


def test_screen_keeps_plausible_and_unknown_records():
    records = [{"name": "disc_height_anterior", "value": 8.0},
               {"name": "disc_height_posterior", "value": -0.3},
               {"name": "perineural_fat_fraction", "value": 0.4}]
    kept, notes = screen(records)
    assert [r["name"] for r in kept] == ["disc_height_anterior", "perineural_fat_fraction"]
    assert len(notes) == 1 and notes[0].startswith("disc_height_posterior withheld")


def test_every_range_is_ordered():
    for name, (lo, hi, unit) in RANGES.items():
        assert lo < hi and unit, name
