"""Measurements on reference masks of synthetic studies, against the generator's geometry."""

from __future__ import annotations

import numpy as np
import pytest
from synth_truth import TruthSegmenter, series_files, truth

from lumbar_common.vocabulary import LEVELS
from models.levels import label_levels
from models.measurements import measure_levels
from models.volume import load_volume

#: 256 px over the field of view gives ~0.9 mm pixels: the 1 mm budget is about one pixel
MATRIX = 256


@pytest.fixture(scope="module")
def measured(synth_study):
    study = synth_study(seed=3, matrix=MATRIX)
    volume = load_volume(series_files(study, "sag_t2"), "sag_t2")
    semantic = TruthSegmenter(study).segment(volume)
    labelling = label_levels(volume, semantic)
    measurements, notes = measure_levels(volume, semantic, labelling)
    return truth(study), volume, measurements, notes


def _value(measurements, level, name):
    found = [m for m in measurements[level] if m["name"] == name]
    assert len(found) == 1, (level, name, measurements[level])
    return found[0]


@pytest.mark.parametrize("level", LEVELS)
def test_canal_and_disc_heights_within_1mm(measured, level):
    t, _, measurements, notes = measured
    assert notes[level] == []
    tl = t["levels"][level]
    assert abs(_value(measurements, level, "canal_ap_diameter")["value"] - tl["canal_ap_mm"]) < 1.0
    for side in ("anterior", "posterior"):
        got = _value(measurements, level, f"disc_height_{side}")["value"]
        assert abs(got - tl[f"disc_height_{side}_mm"]) < 1.0, (side, got)


def test_body_height_and_listhesis(measured):
    t, _, measurements, _ = measured
    for level in LEVELS:
        body = _value(measurements, level, "vertebral_body_height")
        upper = level.split("-")[0]
        assert body["vertebra"] == upper
        assert abs(body["value"] - t["vertebrae"][upper]["body_height_mm"]) < 1.0
        # the generator stacks vertebrae without slip: offsets stay small
        slip = _value(measurements, level, "listhesis")
        assert abs(slip["value"]) < 2.5
        assert slip["direction"] == ("anterolisthesis" if slip["value"] >= 0 else "retrolisthesis")


def test_each_measurement_is_a_caliper_on_one_slice(measured):
    _, volume, measurements, _ = measured
    for level, records in measurements.items():
        for m in records:
            assert m["unit"] == "mm" and m["series_instance_uid"] == volume.series_instance_uid
            assert m["sop_instance_uid"] == volume.sop_instance_uids[m["slice"]]
            a, b = (np.asarray(p) for p in m["points_lps"])
            slice_idx = volume.lps_to_index(np.stack([a, b]))[:, 0]
            assert np.allclose(slice_idx, m["slice"], atol=1e-3), (level, m["name"])
            if m["name"] not in ("listhesis", "disc_height_mean"):
                assert abs(np.linalg.norm(b - a) - m["value"]) < 0.02


def test_mean_disc_height_lies_between_anterior_and_posterior(measured):
    _, _, measurements, _ = measured
    for level in LEVELS:
        a = _value(measurements, level, "disc_height_anterior")["value"]
        p = _value(measurements, level, "disc_height_posterior")["value"]
        mean = _value(measurements, level, "disc_height_mean")["value"]
        assert min(a, p) - 0.5 <= mean <= max(a, p) + 1.5, (level, a, p, mean)
