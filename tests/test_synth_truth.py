"""Ground truth agrees with the images: grades, canal size, labels, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lumbar_common.vocabulary import (
    GRADES,
    LEVELS,
    SPIDER_CANAL,
    finding_keys,
    lss_to_rsna,
    rsna_key,
)
from models.synth import generate_study
from models.synth.pathology import draw_grades, parse_grades

SMALL = 160


def _truth(study: Path) -> dict:
    return json.loads((study / "truth.json").read_text())


def _canal_ap_in_labels(study: Path, level: str) -> tuple[float, int]:
    """Thecal sac AP (mm) measured on the sagittal T2 labels through the disc level, along
    the disc plane, and the number of canal voxels within 4 mm of that plane."""
    truth = _truth(study)
    lv = truth["levels"][level]
    npz = np.load(study / truth["series"]["sag_t2"]["label_file"])
    labels, affine = npz["labels"], npz["affine"]
    inv = np.linalg.inv(affine)
    centre = np.array(lv["canal_centre_lps"])
    normal = np.array(lv["disc_normal_lps"])
    posterior = np.cross(normal, [1.0, 0.0, 0.0])  # in the mid-sagittal plane, posterior
    steps = np.arange(-15.0, 15.0, 0.1)
    pts = centre + steps[:, None] * posterior
    idx = np.rint((np.c_[pts, np.ones(len(pts))] @ inv.T)[:, :3]).astype(int)
    inside = labels[idx[:, 0], idx[:, 1], idx[:, 2]] == SPIDER_CANAL
    ap = float(inside.sum() * 0.1)
    k, r, c = np.indices(labels.shape)
    lps = np.stack([k, r, c, np.ones_like(k)], -1) @ affine.T
    near = np.abs((lps[..., :3] - np.array(lv["disc_centre_lps"])) @ normal) < 4.0
    return ap, int(np.sum((labels == SPIDER_CANAL) & near))


@pytest.fixture(scope="module")
def severe(synth_study) -> Path:
    return synth_study(seed=5, matrix=SMALL, axial="stack", grades={
        "default": "Normal/Mild", "spinal_canal_stenosis_l4_l5": "Severe",
        "left_neural_foraminal_narrowing_l5_s1": "Moderate",
        "left_neural_foraminal_narrowing_l4_l5": "Severe",
        "right_subarticular_stenosis_l4_l5": "Severe"})


@pytest.fixture(scope="module")
def normal(synth_study) -> Path:
    return synth_study(seed=5, matrix=SMALL, axial="stack", grades={"default": "Normal/Mild"})


def test_given_grades_are_the_truth_and_the_rest_follow_default(severe):
    truth = _truth(severe)
    assert truth["rsna"]["spinal_canal_stenosis_l4_l5"] == "Severe"
    assert truth["rsna"]["left_neural_foraminal_narrowing_l5_s1"] == "Moderate"
    assert truth["levels"]["L5-S1"]["lss_foraminal_grade"]["left"] == 2
    assert sum(g != "Normal/Mild" for g in truth["rsna"].values()) == 4
    assert list(truth["rsna"]) == [rsna_key(*k) for k in finding_keys()]


def test_severe_canal_is_narrower_than_normal_in_truth_and_labels(severe, normal):
    ap_sev = _truth(severe)["levels"]["L4-L5"]["canal_ap_mm"]
    ap_nor = _truth(normal)["levels"]["L4-L5"]["canal_ap_mm"]
    assert ap_sev < 7.0 <= 10.0 <= ap_nor
    meas_sev, vox_sev = _canal_ap_in_labels(severe, "L4-L5")
    meas_nor, vox_nor = _canal_ap_in_labels(normal, "L4-L5")
    assert vox_sev < vox_nor
    # labels agree with truth within about one pixel
    spacing = float(np.linalg.norm(np.load(severe / "labels/sag_t2.npz")["affine"][:3, 1]))
    assert abs(meas_sev - ap_sev) < 1.5 * spacing
    assert abs(meas_nor - ap_nor) < 1.5 * spacing


def _sagittal(study: Path, key: str) -> tuple[list, np.ndarray]:
    truth = _truth(study)
    ds = [pydicom.dcmread(study / f) for f in truth["series"][key]["files"]]
    npz = np.load(study / truth["series"][key]["label_file"])
    by_sop = {d.SOPInstanceUID: d for d in ds}
    return [by_sop[s] for s in npz["sop_instance_uids"]], npz["affine"]


def _ring_mean(study: Path, key: str, point: list[float], r0: float, r1: float) -> float:
    """Mean pixel value at r0..r1 mm around an LPS point, in the sagittal slice through it,
    relative to the image's 99th percentile."""
    slices, affine = _sagittal(study, key)
    k, r, c = np.linalg.solve(affine, np.r_[point, 1.0])[:3]
    img = slices[int(round(k))].pixel_array.astype(float)
    ps = float(np.linalg.norm(affine[:3, 1]))
    rr, cc = np.indices(img.shape)
    dist = np.hypot(rr - r, cc - c) * ps
    return float(img[(dist >= r0) & (dist <= r1)].mean() / np.percentile(img, 99))


def test_foraminal_fat_is_gone_at_severe_narrowing_on_t1(severe, normal):
    point = {s: _truth(s)["levels"]["L4-L5"]["foramen_centre_lps"]["left"]
             for s in (severe, normal)}
    assert _truth(severe)["levels"]["L4-L5"]["lss_foraminal_grade"]["left"] == 3
    fat_severe = _ring_mean(severe, "sag_t1", point[severe], 3.0, 4.5)
    fat_normal = _ring_mean(normal, "sag_t1", point[normal], 3.0, 4.5)
    assert fat_severe < 0.7 * fat_normal


def test_severe_subarticular_stenosis_fills_the_lateral_recess(severe, normal):
    for study, expect_canal in ((normal, True), (severe, False)):
        lv = _truth(study)["levels"]["L4-L5"]
        npz = np.load(study / "labels/sag_t2.npz")
        k, r, c = np.rint(np.linalg.solve(npz["affine"], np.r_[
            lv["subarticular_centre_lps"]["right"], 1.0])[:3]).astype(int)
        assert (npz["labels"][k, r, c] == SPIDER_CANAL) == expect_canal


def test_disc_heights_match_the_disc_labels(normal):
    truth = _truth(normal)
    npz = np.load(normal / "labels/sag_t2.npz")
    labels, inv = npz["labels"], np.linalg.inv(npz["affine"])
    spacing = float(np.linalg.norm(npz["affine"][:3, 1]))
    for level, lv in truth["levels"].items():
        centre, normal_ = np.array(lv["disc_centre_lps"]), np.array(lv["disc_normal_lps"])
        anterior = np.cross(normal_, [-1.0, 0.0, 0.0])  # in the sagittal plane, towards -y
        assert anterior[1] < 0
        for name, sign in (("anterior", 1.0), ("posterior", -1.0)):
            foot = centre + sign * 0.85 * lv["disc_depth_mm"] / 2 * anterior
            steps = np.arange(-15.0, 15.0, 0.1)
            pts = foot + steps[:, None] * normal_
            idx = np.rint((np.c_[pts, np.ones(len(pts))] @ inv.T)[:, :3]).astype(int)
            run = (labels[idx[:, 0], idx[:, 1], idx[:, 2]] == lv["disc_label"]).sum() * 0.1
            assert abs(run - lv[f"disc_height_{name}_mm"]) < 1.5 * spacing, (level, name)


def test_partially_seen_vertebrae_carry_the_partial_label(normal):
    truth = _truth(normal)
    labels = np.load(normal / "labels/sag_t2.npz")["labels"]
    values = set(np.unique(labels).tolist())
    for vt in truth["vertebrae"].values():
        if vt["partial_in_sagittal"]:
            assert 100 + vt["label"] in values and vt["label"] not in values
    assert any(v["partial_in_sagittal"] for v in truth["vertebrae"].values())


def test_truth_levels_are_complete_and_consistent(severe):
    truth = _truth(severe)
    assert set(truth["levels"]) == set(LEVELS)
    for level, lv in truth["levels"].items():
        for side in ("left", "right"):
            lss = lv["lss_foraminal_grade"][side]
            assert lss_to_rsna(lss) == lv["grades"][f"{side}_neural_foraminal_narrowing"]
            assert len(lv["foramen_centre_lps"][side]) == 3
            assert len(lv["subarticular_centre_lps"][side]) == 3
        # left is +x in LPS
        assert lv["foramen_centre_lps"]["left"][0] > lv["foramen_centre_lps"]["right"][0]
        assert lv["disc_height_anterior_mm"] > 0 and lv["disc_height_posterior_mm"] > 0
        assert abs(np.linalg.norm(lv["disc_normal_lps"]) - 1) < 1e-3
        assert lv["grades"]["spinal_canal_stenosis"] in GRADES, level
    l5s1 = truth["levels"]["L5-S1"]
    assert l5s1["disc_height_anterior_mm"] > l5s1["disc_height_posterior_mm"]  # lordosis
    for name in ("L1", "L2", "L3", "L4", "L5", "S1"):
        assert truth["vertebrae"][name]["body_height_mm"] > 10


def test_each_vertebra_centre_carries_its_label(normal):
    truth = _truth(normal)
    npz = np.load(normal / truth["series"]["sag_t2"]["label_file"])
    inv = np.linalg.inv(npz["affine"])
    for name, vt in truth["vertebrae"].items():
        k, r, c = np.rint((inv @ np.r_[vt["centre_lps"], 1.0])[:3]).astype(int)
        if not (0 <= r < npz["labels"].shape[1]) or name not in ("L1", "L2", "L3", "L4", "L5",
                                                                  "S1"):
            continue
        assert npz["labels"][k, r, c] == vt["label"], name


def test_same_seed_same_bytes(tmp_path):
    a = generate_study(tmp_path / "a", 9, matrix=96, axial="per-level")
    b = generate_study(tmp_path / "b", 9, matrix=96, axial="per-level")
    assert a == b
    for entry in a["series"].values():
        for rel in entry["files"]:
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    c = generate_study(tmp_path / "c", 10, matrix=96, axial="per-level")
    pa = pydicom.dcmread(tmp_path / "a" / a["series"]["sag_t2"]["files"][0]).PixelData
    pc = pydicom.dcmread(tmp_path / "c" / c["series"]["sag_t2"]["files"][0]).PixelData
    assert pa != pc and a["study_instance_uid"] != c["study_instance_uid"]


def test_random_grades_cover_every_grade_with_lower_levels_worse():
    counts = {lv: np.zeros(3) for lv in LEVELS}
    for seed in range(300):
        grades = draw_grades(np.random.default_rng([seed, 11]), None)
        for (cond, side, level) in finding_keys():
            counts[level][GRADES.index(grades[rsna_key(cond, side, level)])] += 1
    total = sum(counts.values())
    assert total[0] / total.sum() > 0.6 and total[1] > 0 and total[2] > 0
    abnormal = [1 - c[0] / c.sum() for c in counts.values()]
    assert abnormal[3] > abnormal[0] and abnormal[4] > abnormal[0]


@pytest.mark.parametrize("spec, message", [
    ("spinal_canal_stenosis_l9_l9=Severe", "l9_l9"),
    ("spinal_canal_stenosis_l4_l5=Awful", "Awful"),
    ("spinal_canal_stenosis_l4_l5", "key=Grade"),
])
def test_bad_grades_are_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_grades(spec)


def test_grades_from_a_json_file(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"right_subarticular_stenosis_l3_l4": "Moderate"}))
    assert parse_grades(str(path)) == {"right_subarticular_stenosis_l3_l4": "Moderate"}


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="bogus"):
        generate_study(tmp_path, 1, variants=["bogus"])
    with pytest.raises(ValueError, match="diagonal"):
        generate_study(tmp_path, 1, axial="diagonal")
