"""Geometry of synthetic studies, checked through what a reader sees: the DICOM files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lumbar_common.vocabulary import LEVELS, SPIDER_CANAL, spider_disc_label

SMALL = 160


def _truth(study: Path) -> dict:
    return json.loads((study / "truth.json").read_text())


def _planes(study: Path, files: list[str]) -> list[dict]:
    out = []
    for rel in files:
        ds = pydicom.dcmread(study / rel, stop_before_pixels=True)
        iop = np.array(ds.ImageOrientationPatient, float)
        out.append({
            "file": rel, "sop": ds.SOPInstanceUID,
            "ipp": np.array(ds.ImagePositionPatient, float),
            "row": iop[:3], "col": iop[3:], "normal": np.cross(iop[:3], iop[3:]),
            "ps": np.array(ds.PixelSpacing, float), "rows": ds.Rows, "cols": ds.Columns,
            "thick": float(ds.SliceThickness),
        })
    return out


def _project(plane: dict, point: np.ndarray) -> tuple[float, float, float]:
    """(distance from plane, row, col) of an LPS point."""
    rel = point - plane["ipp"]
    return (float(rel @ plane["normal"]), float(rel @ plane["col"] / plane["ps"][0]),
            float(rel @ plane["row"] / plane["ps"][1]))


@pytest.fixture(scope="module", params=["per-level", "stack"])
def study(request, synth_study) -> Path:
    return synth_study(seed=3, axial=request.param, matrix=SMALL)


def test_disc_centres_land_on_their_disc_label_in_every_sagittal_series(study):
    truth = _truth(study)
    for key in ("sag_t1", "sag_t2"):
        entry = truth["series"][key]
        npz = np.load(study / entry["label_file"])
        labels, affine = npz["labels"], npz["affine"]
        planes = {p["sop"]: p for p in _planes(study, entry["files"])}
        for level in LEVELS:
            centre = np.array(truth["levels"][level]["disc_centre_lps"])
            dist = [abs(_project(planes[sop], centre)[0]) for sop in npz["sop_instance_uids"]]
            k = int(np.argmin(dist))
            _, r, c = _project(planes[npz["sop_instance_uids"][k]], centre)
            assert labels[k, int(round(r)), int(round(c))] == spider_disc_label(level), level
            # the npz affine says the same as the DICOM geometry
            idx = np.linalg.solve(affine, np.r_[centre, 1.0])[:3]
            assert np.allclose(idx[1:], [r, c], atol=1e-3)
            assert abs(idx[0] - k) <= 0.5 + 1e-6


def test_label_affine_matches_each_file_position(study):
    truth = _truth(study)
    entry = truth["series"]["sag_t2"]
    npz = np.load(study / entry["label_file"])
    planes = {p["sop"]: p for p in _planes(study, entry["files"])}
    for k, sop in enumerate(npz["sop_instance_uids"]):
        assert np.allclose(npz["affine"] @ [k, 0, 0, 1], np.r_[planes[sop]["ipp"], 1], atol=1e-3)
    ipps = [planes[s]["ipp"] @ planes[s]["normal"] for s in npz["sop_instance_uids"]]
    assert np.all(np.diff(ipps) > 0), "label slices must ascend along the normal"


def test_disc_centres_fall_inside_the_axial_slab_at_their_level(study):
    truth = _truth(study)
    entry = truth["series"]["ax_t2"]
    planes = _planes(study, entry["files"])
    levels = dict(zip(entry["files"], entry["slice_levels"], strict=True))
    for level in LEVELS:
        centre = np.array(truth["levels"][level]["disc_centre_lps"])
        hits = []
        for p in planes:
            d, r, c = _project(p, centre)
            inside = 0 <= r < p["rows"] and 0 <= c < p["cols"]
            spacing = float(pydicom.dcmread(study / p["file"], stop_before_pixels=True)
                            .SpacingBetweenSlices)
            if inside and abs(d) <= max(p["thick"], spacing) / 2 + 1e-6:
                hits.append(p["file"])
        assert hits, f"{level} disc centre is in no axial slice"
        if entry["axial_mode"] == "per-level":
            assert all(levels[f] == level for f in hits)
            normal = np.array(truth["levels"][level]["disc_normal_lps"])
            block = [p for p in planes if levels[p["file"]] == level]
            assert all(abs(p["normal"] @ normal) > 0.999 for p in block), "block not along disc"


def test_one_frame_of_reference_and_study(study):
    truth = _truth(study)
    for key, entry in truth["series"].items():
        ds = pydicom.dcmread(study / entry["files"][0], stop_before_pixels=True)
        assert ds.FrameOfReferenceUID == truth["frame_of_reference_uid"], key
        assert ds.StudyInstanceUID == truth["study_instance_uid"], key
        assert ds.SeriesInstanceUID == entry["series_instance_uid"], key


def test_canal_label_is_behind_each_disc(study):
    truth = _truth(study)
    npz = np.load(study / truth["series"]["sag_t2"]["label_file"])
    inv = np.linalg.inv(npz["affine"])
    for level in LEVELS:
        lv = truth["levels"][level]
        canal = np.array(lv["canal_centre_lps"])
        k, r, c = (inv @ np.r_[canal, 1.0])[:3]
        assert npz["labels"][int(round(k)), int(round(r)), int(round(c))] == SPIDER_CANAL
