"""Volume assembly on files written like scanners write them (disorder, repeats, blocks)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from models.volume import assemble_series, load_volume

SAG = np.array([0.0, 1.0, 0.0, 0.0, 0.0, -1.0])


def _base(series_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def write_instance(path: Path, series_uid: str, iop: np.ndarray, ipp: np.ndarray, value: int,
                   acq: int = 1, sop: str | None = None, shape=(8, 10), spacing=(0.5, 0.7)):
    ds = _base(series_uid)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop or generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.PixelSpacing = list(spacing)
    ds.AcquisitionNumber = acq
    ds.InstanceNumber = 1  # deliberately useless for ordering
    ds.Rows, ds.Columns = shape
    ds.PixelData = np.full(shape, value, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds.SOPInstanceUID


def _normal(iop: np.ndarray) -> np.ndarray:
    return np.cross(iop[:3], iop[3:])


def _check_affine(vol, files_by_sop):
    for k, sop in enumerate(vol.sop_instance_uids):
        ds = pydicom.dcmread(files_by_sop[sop], stop_before_pixels=True)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        ps = [float(v) for v in ds.PixelSpacing]
        expect = ipp + 3 * ps[1] * iop[:3] + 2 * ps[0] * iop[3:]
        assert np.allclose(vol.index_to_lps([k, 2, 3]), expect, atol=1e-6)


def test_out_of_order_sorted_by_position_with_lps_affine(tmp_path: Path):
    uid = generate_uid()
    files, by_sop = [], {}
    for k in [4, 0, 3, 1, 2]:
        path = tmp_path / f"IM{k}.dcm"
        sop = write_instance(path, uid, SAG, np.array([-10.0 - 4.0 * k, -50.0, 80.0]), value=k)
        files.append(path)
        by_sop[sop] = path
    vol = load_volume(files, role="sag_t2")
    # normal of this IOP is -x: ascending along it means x decreasing
    assert [int(vol.array[i, 0, 0]) for i in range(5)] == [0, 1, 2, 3, 4]
    assert np.allclose(vol.spacing, [4.0, 0.5, 0.7])
    _check_affine(vol, by_sop)
    assert vol.role == "sag_t2" and vol.series_instance_uid == uid


def test_duplicates_and_unreadable_recorded(tmp_path: Path):
    uid = generate_uid()
    files = []
    for k in range(4):
        path = tmp_path / f"IM{k}.dcm"
        write_instance(path, uid, SAG, np.array([4.0 * k, 0.0, 0.0]), value=k)
        files.append(path)
    # same position re-acquired: the later acquisition must win
    again = tmp_path / "repeat.dcm"
    write_instance(again, uid, SAG, np.array([8.0, 0.0, 0.0]), value=99, acq=2)
    # the same SOP instance sent twice
    same_sop = pydicom.dcmread(files[0])
    (tmp_path / "copy.dcm").write_bytes(files[0].read_bytes())
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(files[1].read_bytes()[:400])
    result = assemble_series([*files, again, tmp_path / "copy.dcm", broken])
    vol = result.main
    assert vol.array.shape[0] == 4
    values = sorted(int(v) for v in vol.array[:, 0, 0])
    assert 99 in values and 2 not in values
    text = "\n".join(result.warnings)
    assert "acquisition 2" in text
    assert f"{same_sop.SOPInstanceUID} received twice" in text
    assert "broken.dcm" in text


def test_angled_per_level_axials_split_into_stacks(tmp_path: Path):
    uid = generate_uid()
    files, by_sop = [], {}
    # three blocks of 4 slices, each tilted along its disc, centred 40 mm apart
    for b, (deg, z) in enumerate([(-20.0, 40.0), (0.0, 0.0), (25.0, -40.0)]):
        a = math.radians(deg)
        iop = np.array([1.0, 0.0, 0.0, 0.0, math.cos(a), math.sin(a)])
        n = _normal(iop)
        for k in range(4):
            ipp = np.array([-20.0, -30.0, z]) + n * 4.0 * (k - 1.5)
            path = tmp_path / f"B{b}_{k}.dcm"
            by_sop[write_instance(path, uid, iop, ipp, value=10 * b + k)] = path
            files.append(path)
    # same angle, far apart: a gap splits those too
    iop = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    for k in range(3):
        path = tmp_path / f"G{k}.dcm"
        ipp = np.array([-20.0, -30.0, 90.0 + 60 * (k // 2) + 4 * k])
        by_sop[write_instance(path, uid, iop, ipp, value=50 + k)] = path
        files.append(path)
    result = assemble_series(files[::-1], role="ax_t2")
    sizes = sorted(v.array.shape[0] for v in result.volumes)
    assert sizes == [1, 2, 4, 4, 4]
    for vol in result.volumes:
        _check_affine(vol, by_sop)
    assert any("split into 5 stacks" in w for w in result.warnings)


def test_uneven_spacing_reported(tmp_path: Path):
    uid = generate_uid()
    files = []
    for k, x in enumerate([0.0, 4.0, 8.0, 13.0, 17.0]):
        path = tmp_path / f"IM{k}.dcm"
        write_instance(path, uid, SAG, np.array([x, 0.0, 0.0]), value=k)
        files.append(path)
    result = assemble_series(files)
    assert len(result.volumes) == 1
    assert any("uneven slice spacing" in w for w in result.warnings)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless])
def test_compressed_instances(tmp_path: Path, syntax):
    uid = generate_uid()
    files = []
    for k in range(3):
        path = tmp_path / f"IM{k}.dcm"
        write_instance(path, uid, SAG, np.array([2.0 * k, 0.0, 0.0]), value=100 + k)
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(path)
        files.append(path)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == syntax
    vol = load_volume(files)
    assert [int(vol.array[k, 3, 3]) for k in range(3)] == [102, 101, 100]


def test_enhanced_multiframe(tmp_path: Path):
    ds = _base(generate_uid())
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns = 6, 7
    order = [2, 0, 1, 3]
    ds.NumberOfFrames = len(order)
    shared = Dataset()
    orient, measures = Dataset(), Dataset()
    orient.ImageOrientationPatient = [float(v) for v in SAG]
    measures.PixelSpacing = [0.8, 0.8]
    measures.SliceThickness = 3.0
    shared.PlaneOrientationSequence = [orient]
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in order:
        pos = Dataset()
        pos.ImagePositionPatient = [-3.0 * k, 0.0, 0.0]
        per = Dataset()
        per.PlanePositionSequence = [pos]
        frames.append(per)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.stack([np.full((6, 7), k, np.uint16) for k in order]).tobytes()
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    vol = load_volume([path])
    assert [int(v) for v in vol.array[:, 0, 0]] == [0, 1, 2, 3]
    assert np.allclose(vol.spacing, [3.0, 0.8, 0.8])
    assert np.allclose(vol.index_to_lps([2, 0, 0]), [-6.0, 0.0, 0.0])


def test_nothing_readable_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"junk")
    with pytest.raises(ValueError, match="no readable images"):
        load_volume([bad])


# --- on synthetic studies ------------------------------------------------------------------


def test_synthetic_messy_sagittal(synth_study):
    import json

    study = synth_study(seed=6, variants=["localizer", "duplicate_instances",
                                          "duplicate_position", "out_of_order", "corrupt"],
                        matrix=128)
    truth = json.loads((study / "truth.json").read_text())
    files = sorted((study / "dicom" / "sag_t2").glob("*.dcm"))
    result = assemble_series(files, "sag_t2")
    text = "\n".join(result.warnings)
    assert truth["corrupt_files"][0].split("/")[-1] in text
    assert "received twice" in text and "acquisition 2" in text
    with np.load(study / truth["series"]["sag_t2"]["label_file"]) as npz:
        label_affine = npz["affine"]
        n_labels = npz["labels"].shape[0]
    # the corrupt slice leaves a gap: the stacks on either side keep the labels' geometry
    assert sum(v.array.shape[0] for v in result.volumes) == n_labels - 1
    for vol in result.volumes:
        inv = np.linalg.inv(label_affine)
        first = inv[:3, :3] @ vol.affine[:3, 3] + inv[:3, 3]
        assert np.allclose(first[1:], 0, atol=1e-3) and abs(first[0] - round(first[0])) < 1e-3
        assert np.allclose(vol.affine[:3, :3], label_affine[:3, :3], atol=1e-3)


def test_synthetic_per_level_axials(synth_study):
    import json

    study = synth_study(seed=3, matrix=128)
    truth = json.loads((study / "truth.json").read_text())
    rec = truth["series"]["ax_t2"]
    assert rec["axial_mode"] == "per-level"
    level_of = dict(zip(rec["sop_instance_uids"], rec["slice_levels"], strict=True))
    result = assemble_series([study / f for f in rec["files"]][::-1], "ax_t2")
    assert len(result.volumes) == len(set(rec["slice_levels"]))
    for vol in result.volumes:
        assert len({level_of[u] for u in vol.sop_instance_uids}) == 1
        # every stack is a regular grid: its affine reproduces each file's position
        for k, uid in enumerate(vol.sop_instance_uids):
            ds = pydicom.dcmread(study / rec["files"][rec["sop_instance_uids"].index(uid)],
                                 stop_before_pixels=True)
            assert np.allclose(vol.index_to_lps([k, 0, 0]),
                               [float(v) for v in ds.ImagePositionPatient], atol=1e-3)
