"""Each study variant produces what it claims, as seen through pydicom and DCMTK."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError

SMALL = 128


def _truth(study: Path) -> dict:
    return json.loads((study / "truth.json").read_text())


def _all_files(study: Path) -> list[Path]:
    return sorted((study / "dicom").rglob("*.dcm"))


@pytest.fixture(scope="module")
def faulty(synth_study) -> Path:
    return synth_study(seed=2, matrix=SMALL, variants=[
        "corrupt", "localizer", "duplicate_instances", "duplicate_position", "out_of_order"])


@pytest.fixture(scope="module")
def plain(synth_study) -> Path:
    return synth_study(seed=4, matrix=SMALL)


def test_plain_study_has_three_series_with_the_vendor_tags(plain):
    truth = _truth(plain)
    assert set(truth["series"]) == {"sag_t1", "sag_t2", "ax_t2"}
    seen = {}
    for key, entry in truth["series"].items():
        ds = pydicom.dcmread(plain / entry["files"][0])
        assert ds.Modality == "MR" and ds.BodyPartExamined == "LSPINE"
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsAllocated == 16
        assert ds.pixel_array.dtype == np.uint16 and ds.pixel_array.max() > 0
        assert ds.Manufacturer == truth["manufacturer"]
        seen[key] = (float(ds.EchoTime), float(ds.RepetitionTime), ds.SeriesDescription)
    assert seen["sag_t1"][0] < 20 < 60 < seen["sag_t2"][0]
    sag = pydicom.dcmread(plain / truth["series"]["sag_t2"]["files"][0])
    assert 12 <= len(truth["series"]["sag_t2"]["files"]) <= 20
    assert 3.0 <= float(sag.SliceThickness) <= 4.0
    assert abs(abs(float(sag.ImageOrientationPatient[1])) - 1) < 0.01  # rows run A->P


def test_every_file_reads_with_pydicom_and_dcmdump_except_the_corrupt_one(faulty):
    truth = _truth(faulty)
    corrupt = {faulty / f for f in truth["corrupt_files"]}
    assert len(corrupt) == 1
    for path in _all_files(faulty):
        run = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True)
        if path in corrupt:
            assert run.returncode != 0
            with pytest.raises(InvalidDicomError):
                pydicom.dcmread(path)
            continue
        assert run.returncode == 0, (path, run.stderr)
        assert pydicom.dcmread(path).pixel_array.size > 0


def test_dciodvfy_finds_no_errors(plain):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed")
    for entry in _truth(plain)["series"].values():
        run = subprocess.run(["dciodvfy", str(plain / entry["files"][0])], capture_output=True,
                             text=True)
        errors = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, errors


def test_duplicate_instance_is_the_same_sop_twice(faulty):
    (src, dst), = _truth(faulty)["duplicate_files"]
    a, b = pydicom.dcmread(faulty / src), pydicom.dcmread(faulty / dst)
    assert src != dst and a.SOPInstanceUID == b.SOPInstanceUID


def test_duplicate_position_differs_only_in_acquisition(faulty):
    dup = _truth(faulty)["duplicate_position"]
    a, b = (pydicom.dcmread(faulty / f) for f in dup["files"])
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.ImagePositionPatient == b.ImagePositionPatient
    assert (a.AcquisitionNumber, b.AcquisitionNumber) == (1, 2)


def test_out_of_order_numbering_does_not_follow_position(faulty):
    truth = _truth(faulty)
    for key in ("sag_t1", "ax_t2"):
        files = truth["series"][key]["files"]
        ds = [pydicom.dcmread(faulty / f, stop_before_pixels=True) for f in files]
        normal = np.cross(*np.reshape(np.array(ds[0].ImageOrientationPatient, float), (2, 3)))
        by_number = sorted(ds, key=lambda d: d.InstanceNumber)
        pos = [np.array(d.ImagePositionPatient, float) @ normal for d in by_number]
        assert not (np.all(np.diff(pos) > 0) or np.all(np.diff(pos) < 0)), key
        # file names follow the (shuffled) instance numbers
        assert [f"IM{d.InstanceNumber:04d}.dcm" for d in ds] == [Path(f).name for f in files]


def test_localizer_is_three_orthogonal_planes(faulty):
    entry = _truth(faulty)["series"]["localizer"]
    normals = []
    for f in entry["files"]:
        ds = pydicom.dcmread(faulty / f, stop_before_pixels=True)
        assert "LOCALIZER" in ds.ImageType
        normals.append(np.cross(*np.reshape(np.array(ds.ImageOrientationPatient, float),
                                            (2, 3))))
    assert np.allclose(np.abs(np.array(normals)), np.eye(3)[[0, 1, 2]], atol=1e-6)


def test_missing_series_and_stir(synth_study):
    study = synth_study(seed=6, matrix=SMALL, variants=["missing_sag_t1", "missing_ax_t2"],
                        stir=True)
    truth = _truth(study)
    assert set(truth["series"]) == {"sag_stir"}
    assert "stir" in truth["variants"]
    ds = pydicom.dcmread(study / truth["series"]["sag_stir"]["files"][0])
    assert "IR" in ds.ScanningSequence and float(ds.InversionTime) > 100
    assert (study / "labels" / "sag_stir.npz").is_file()


def test_non_lumbar_is_a_brain_study_without_spine(synth_study):
    study = synth_study(seed=7, variants=["non_lumbar"])
    truth = _truth(study)
    assert set(truth["series"]) == {"brain_t2"} and truth["rsna"] == {}
    for path in _all_files(study):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.BodyPartExamined == "BRAIN"
        assert np.allclose(np.abs(np.array(ds.ImageOrientationPatient, float)), [1, 0, 0, 0, 1,
                                                                               0], atol=1e-6)
    assert not (study / "labels").exists()


def test_transitional_has_six_lumbar_type_vertebrae(synth_study):
    study = synth_study(seed=8, matrix=SMALL, variants=["transitional"])
    truth = _truth(study)
    assert truth["transitional_anatomy"] and truth["lumbar_vertebrae"] == 6
    lumbar_type = [n for n, v in truth["vertebrae"].items() if v["lumbar_type"]]
    assert len(lumbar_type) == 6 and "T12" in lumbar_type
    labels = np.load(study / "labels" / "sag_t2.npz")["labels"]
    assert {1, 2, 3, 4, 5} <= set(np.unique(labels).tolist())
    assert 6 in labels or 106 in labels  # the sixth lumbar-type vertebra is in view


def test_preview_is_written(synth_study):
    from PIL import Image

    study = synth_study(seed=4, matrix=SMALL, preview=True)
    img = Image.open(study / "preview.png")
    assert img.mode == "RGB" and img.width > 2 * img.height
