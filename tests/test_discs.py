"""Disc grader: crop geometry, the shipped weights on a real mid-sagittal image, folds by
patient, metrics and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from models.discs.crops import CROP_COLS, CROP_MM, CROP_ROWS, POSTERIOR_SHIFT_MM, disc_crop
from models.discs.dataset import BINARY, level_code, level_features
from models.discs.fit import patient_folds
from models.discs.metrics import auc, balanced_accuracy, kappa_linear
from models.discs.ood import EmbeddingStats, verdict
from models.realdata.midsag import load_midsag_volume, midsag_volume
from models.realdata.spider import midsag_images
from models.study import LevelGeometry, Volume


def _geometry(centre: np.ndarray, tilt_deg: float) -> LevelGeometry:
    """A disc level tilted by ``tilt_deg`` in the sagittal (y-z) plane."""
    a = np.deg2rad(tilt_deg)
    cranial = np.array([0.0, np.sin(a), np.cos(a)])
    posterior = np.array([0.0, np.cos(a), -np.sin(a)])
    return LevelGeometry("L4-L5", centre, cranial, posterior, centre + 20 * posterior)


def _disc_volume(geometry: LevelGeometry, slices: int = 3) -> Volume:
    """A 0.5 x 0.8 mm slab with a bright 30 x 8 mm disc (long along ``posterior``) at the
    geometry's centre on the middle slice only."""
    rows, cols = 300, 200
    affine = np.array([[-3.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.8, -80.0],
                       [0.0, -0.5, 0.0, 75.0], [0.0, 0.0, 0.0, 1.0]])
    vol = Volume("sag_t2", "synthetic", np.zeros((slices, rows, cols), np.float32), affine,
                 tuple(f"s{k}" for k in range(slices)))
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    k = slices // 2
    pts = vol.index_to_lps(np.stack([np.full_like(r, k), r, c], -1))
    rel = pts - geometry.disc_centre_lps
    along, across = rel @ geometry.posterior_lps, rel @ geometry.cranial_lps
    image = np.where((np.abs(along) <= 15) & (np.abs(across) <= 4), 200.0, 20.0)
    vol.array[k] = image
    return vol


@pytest.mark.parametrize("tilt", [0.0, 25.0])
def test_crop_puts_the_disc_on_the_documented_grid(tilt: float) -> None:
    # the middle slice sits at x = 0; the affine's slice axis runs -x from +3 mm
    geometry = _geometry(np.array([0.0, 0.0, 0.0]), tilt)
    crop = disc_crop(_disc_volume(geometry), geometry)
    assert crop.image.shape == (CROP_ROWS, CROP_COLS)
    assert crop.slice_index == 1
    bright = crop.image > 0.5
    rows, cols = np.nonzero(bright)
    # 8 mm tall, 30 mm long along the disc plane whatever the tilt
    assert rows.max() - rows.min() + 1 == pytest.approx(8 / CROP_MM, abs=1.5)
    assert cols.max() - cols.min() + 1 == pytest.approx(30 / CROP_MM, abs=1.5)
    centre_col = (CROP_COLS - 1) / 2 - POSTERIOR_SHIFT_MM / CROP_MM
    assert cols.mean() == pytest.approx(centre_col, abs=0.7)
    assert rows.mean() == pytest.approx((CROP_ROWS - 1) / 2, abs=0.7)
    # the documented mapping: pixel (r, c) -> origin + r * row_step + c * col_step
    assert np.allclose(crop.row_step_lps, -CROP_MM * geometry.cranial_lps, atol=1e-9)
    assert np.allclose(crop.col_step_lps, CROP_MM * geometry.posterior_lps, atol=1e-9)
    assert crop.outside_fraction == 0.0


def test_crop_outside_the_image_is_counted() -> None:
    geometry = _geometry(np.array([0.0, 0.0, 0.0]), 0.0)
    vol = _disc_volume(geometry)
    far = _geometry(np.array([0.0, 75.0, 0.0]), 0.0)  # near the posterior edge
    assert disc_crop(vol, far).outside_fraction > 0.3


def test_bad_input_raises_value_error_naming_the_value() -> None:
    geometry = _geometry(np.zeros(3), 0.0)
    vol = _disc_volume(geometry)
    bad = LevelGeometry("L4-L5", np.zeros(3), np.zeros(3), geometry.posterior_lps, np.zeros(3))
    with pytest.raises(ValueError, match="cranial_lps"):
        disc_crop(vol, bad)
    with pytest.raises(ValueError, match="row_mm"):
        midsag_volume(np.zeros((10, 10)), -1.0, 0.5, "x")
    with pytest.raises(ValueError, match="'L4'"):
        level_code("L4")
    with pytest.raises(ValueError, match="folds"):
        patient_folds(np.array(["1", "2", "3"]), 1, 0)


def test_cv_folds_never_share_a_patient() -> None:
    patients = np.repeat([str(p) for p in range(40)], 6)  # six discs per patient
    fold_of = patient_folds(patients, 5, seed=3)
    folds = np.array([fold_of[p] for p in patients])
    for k in range(5):
        held = set(patients[folds == k])
        assert held and held.isdisjoint(set(patients[folds != k]))
    assert sorted(np.bincount(list(fold_of.values()))) == [8, 8, 8, 8, 8]


def test_metrics_and_features() -> None:
    y = np.array([0, 1, 2, 3, 4, 4])
    assert kappa_linear(y, y, 5) == pytest.approx(1.0)
    assert balanced_accuracy(y, np.zeros(6, int)) == pytest.approx(0.2)
    assert auc(np.array([0.1, 0.9, 0.8]), np.array([0, 1, 1])) == 1.0
    feats = level_features({"L4-L5": [{"name": "disc_height_mean", "value": 9.0},
                                      {"name": "vertebral_body_height", "value": 27.0}],
                            "L5-S1": [{"name": "vertebral_body_height", "value": 27.0}]})
    values, present = feats["L4-L5"]
    assert values[0] == pytest.approx(1 / 3) and present[0] == 1.0 and present[4] == 0.0
    assert not feats["L5-S1"][1].any()


def test_ood_score_grows_with_distance() -> None:
    rng = np.random.default_rng(0)
    stats = EmbeddingStats.fit(rng.normal(size=(200, 8)))
    near, far = stats.score(rng.normal(size=(50, 8))), stats.score(8 + rng.normal(size=(5, 8)))
    assert far.min() > near.max()
    assert verdict(float(far[0]), 2.0)["flagged"] and verdict(1.0, 2.0)["reason"] is None


@pytest.fixture(scope="module")
def real_case() -> dict:
    from models.discs.infer import DiscGrader
    from models.levels import label_levels
    from models.pipeline import load_segmenter

    images = {(m.patient, m.sequence): m for m in midsag_images()}
    t2m, t1m = images[("2", "t2")], images[("2", "t1")]
    t2 = load_midsag_volume(t2m.path, t2m.row_mm, t2m.col_mm, "2_t2", t2m.slice_thickness_mm)
    t1 = load_midsag_volume(t1m.path, t1m.row_mm, t1m.col_mm, "2_t1", t1m.slice_thickness_mm,
                            role="sag_t1")
    segmenter = load_segmenter("cpu")
    labelling = label_levels(t2, segmenter.segment(t2))
    return {"grader": DiscGrader.load("cpu"), "segmenter": segmenter, "t2": t2, "t1": t1,
            "labelling": labelling}


def test_shipped_weights_predict_the_documented_schema(real_case: dict) -> None:
    grader = real_case["grader"]
    out = grader.predict_images(real_case["segmenter"], real_case["t2"], real_case["t1"])
    assert [e["level"] for e in out] == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    for e in out:
        assert e["assessable"] is True and e["reason"] is None
        assert e["model_version"] == grader.model_version
        assert 1 <= e["pfirrmann"]["grade"] <= 5 and 0 <= e["modic"]["type"] <= 3
        assert sum(e["pfirrmann"]["probabilities"]) == pytest.approx(1.0, abs=1e-3)
        assert sum(e["modic"]["probabilities"]) == pytest.approx(1.0, abs=1e-3)
        assert e["pfirrmann"]["grade"] == 1 + int(np.argmax(e["pfirrmann"]["probabilities"]))
        for name in BINARY:
            assert 0.0 <= e[name]["probability"] <= 1.0
            assert e[name]["present"] == (e[name]["probability"] >= 0.5)
        assert set(e["ood"]) == {"flagged", "score", "threshold", "reason"}
        assert e["ood"]["flagged"] is False
    # T2 alone (no T1) still grades every disc
    alone = grader.predict(real_case["t2"], real_case["labelling"])
    assert len(alone) == 5


def test_noise_is_flagged_and_bad_calls_are_refused(real_case: dict) -> None:
    grader, t2 = real_case["grader"], real_case["t2"]
    noise = Volume("sag_t2", "noise", np.random.default_rng(1).uniform(0, 255, t2.array.shape)
                   .astype(np.float32), t2.affine, t2.sop_instance_uids)
    out = grader.predict(noise, real_case["labelling"])
    assert all(e["ood"]["flagged"] and "out of distribution" in e["ood"]["reason"] for e in out)
    with pytest.raises(ValueError, match="t1_labelling"):
        grader.predict(t2, real_case["labelling"], t1_volume=real_case["t1"])
    with pytest.raises(ValueError, match="volume must be a models.study.Volume"):
        grader.predict(t2.array, real_case["labelling"])  # type: ignore[arg-type]
