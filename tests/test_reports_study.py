"""A small sagittal MR study with SPIDER labels and findings, for the result-object tests.

Built with pydicom (not mocked): real DICOM files on disk, assembled by ``models.volume``
exactly as the pipeline does, so the SEG/SR/key-image builders see what they see in
production.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from lumbar_common.vocabulary import (
    CANAL,
    FORAMEN,
    GRADES,
    LEVELS,
    SPIDER_CANAL,
    finding_keys,
    rsna_key,
    spider_disc_label,
    spider_vertebra_label,
)
from models.study import StudyAnatomy, Volume
from models.volume import load_volume

SLICES, ROWS, COLS = 7, 96, 48
SPACING = (2.0, 2.0)  # row, column spacing in mm
THICKNESS = 3.0
STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1002"
FOR_UID = "1.2.826.0.1.3680043.8.498.1003"
#: rows of each vertebral body (cranial first) and the disc below it
BODY_ROWS, DISC_ROWS, TOP = 12, 4, 4
BODY_COLS, CANAL_COLS = (8, 28), (31, 37)


def make_labels(scale: int = 1, slices: int = SLICES) -> np.ndarray:
    """Labels on the base grid, each pixel repeated ``scale`` times along rows and columns."""
    labelled = range(1, slices - 1)
    labels = np.zeros((slices, ROWS, COLS), dtype=np.uint16)
    row = TOP
    for name in ("L1", "L2", "L3", "L4", "L5"):
        labels[
            labelled.start : labelled.stop,
            row : row + BODY_ROWS,
            BODY_COLS[0] : BODY_COLS[1],
        ] = spider_vertebra_label(name)
        row += BODY_ROWS
        level = f"{name}-{'S1' if name == 'L5' else 'L' + str(int(name[1]) + 1)}"
        labels[
            labelled.start : labelled.stop,
            row : row + DISC_ROWS,
            BODY_COLS[0] + 1 : BODY_COLS[1] - 1,
        ] = spider_disc_label(level)
        row += DISC_ROWS
    labels[labelled.start : labelled.stop, row : ROWS - 2, BODY_COLS[0] : BODY_COLS[1]] = (
        spider_vertebra_label("sacrum")
    )
    mid = slices // 2
    labels[mid - 1 : mid + 2, TOP:row, CANAL_COLS[0] : CANAL_COLS[1]] = SPIDER_CANAL
    return labels.repeat(scale, axis=1).repeat(scale, axis=2)


def write_series(directory: Path, labels: np.ndarray) -> dict[str, Path]:
    """One sagittal T2 series; returns SOPInstanceUID -> file."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    files: dict[str, Path] = {}
    scale = labels.shape[1] // ROWS
    for index in range(labels.shape[0]):
        pixels = rng.normal(100, 10, labels.shape[1:])
        lab = labels[index]
        pixels[(lab >= 1) & (lab <= 5) | (lab == 50)] += 400
        pixels[lab > 200] += 700
        pixels[lab == SPIDER_CANAL] += 1000
        sop = f"1.2.826.0.1.3680043.8.498.2{index:03d}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(
            str(directory / f"IM{index + 1:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128
        )
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
        ds.PatientName, ds.PatientID = "TEST^REPORTS", "REP0001"
        ds.PatientBirthDate, ds.PatientSex = "19600101", "F"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, SERIES_UID
        ds.FrameOfReferenceUID = FOR_UID
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "101010", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName = "ACC1", "REF^DOC"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 3, index + 1
        ds.SeriesDescription, ds.Manufacturer = "SAG T2", "TEST"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "SK", ""
        ds.MRAcquisitionType, ds.EchoTime, ds.RepetitionTime = "2D", 100.0, 3000.0
        ds.EchoTrainLength, ds.MagneticFieldStrength = 16, 1.5
        ds.ImagePositionPatient = [float(-6.0 + index * THICKNESS), -50.0, 100.0]
        ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        ds.PixelSpacing = [v / scale for v in SPACING]
        ds.SliceThickness = THICKNESS
        ds.SliceLocation = float(-6.0 + index * THICKNESS)
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = labels.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.clip(pixels, 0, 4095).astype(np.uint16).tobytes()
        ds.save_as(ds.filename, enforce_file_format=True)
        files[sop] = Path(ds.filename)
    return files


def _disc_rows(level: str) -> tuple[int, int]:
    start = TOP + (LEVELS.index(level) + 1) * BODY_ROWS + LEVELS.index(level) * DISC_ROWS
    return start, start + DISC_ROWS


def make_findings(
    volume: Volume, versions: dict[str, str] | None = None, not_assessable: tuple[str, ...] = ()
) -> dict:
    """findings.json for the study: grades cycle through the RSNA grades."""
    versions = versions or {}
    mid = volume.array.shape[0] // 2
    scale = volume.array.shape[1] // ROWS

    def at(slice_: float, row: float, col: float) -> list[float]:
        return volume.index_to_lps([slice_, row * scale, col * scale]).tolist()

    levels, findings, rsna = [], [], {}
    for level in LEVELS:
        r0, r1 = _disc_rows(level)
        centre = at(mid, (r0 + r1) / 2, sum(BODY_COLS) / 2)
        canal = [at(mid, (r0 + r1) / 2, c) for c in CANAL_COLS]
        front = [at(mid, r, BODY_COLS[0] + 1) for r in (r0, r1)]
        back = [at(mid, r, BODY_COLS[1] - 2) for r in (r0, r1)]
        levels.append(
            {
                "level": level,
                "disc_centre_lps": centre,
                "warnings": [],
                "measurements": [
                    {
                        "name": "canal_ap_diameter",
                        "value": 12.0 - LEVELS.index(level),
                        "unit": "mm",
                        "series_instance_uid": SERIES_UID,
                        "slice": mid,
                        "points_lps": canal,
                    },
                    {
                        "name": "disc_height_anterior",
                        "value": 8.0,
                        "unit": "mm",
                        "series_instance_uid": SERIES_UID,
                        "slice": mid,
                        "points_lps": front,
                    },
                    {
                        "name": "disc_height_posterior",
                        "value": 6.0 + 0.5 * LEVELS.index(level),
                        "unit": "mm",
                        "series_instance_uid": SERIES_UID,
                        "slice": mid,
                        "points_lps": back,
                    },
                ],
            }
        )
    for i, (condition, side, level) in enumerate(finding_keys()):
        r0, r1 = _disc_rows(level)
        corners = [at(mid, r, c) for r, c in ((r0 - 2, 6), (r0 - 2, 40), (r1 + 2, 40), (r1 + 2, 6))]
        key = rsna_key(condition, side, level)
        grade_index = i % 3
        probabilities = [0.1, 0.1, 0.1]
        probabilities[grade_index] = 0.8
        assessable = key not in not_assessable
        findings.append(
            {
                "level": level,
                "condition": condition,
                "side": side,
                "grade": GRADES[grade_index] if assessable else None,
                "probabilities": probabilities if assessable else None,
                "assessable": assessable,
                "reason": None if assessable else "axial series does not cover this level",
                "grader": "learned",
                "model_version": versions.get("grader", "2.0"),
                "roi": {"series_instance_uid": SERIES_UID, "slice": mid, "corners_lps": corners},
            }
        )
        rsna[key] = probabilities
    return {
        "schema": "lumbar-node/findings/1",
        "status": "complete",
        "reason": None,
        "study_instance_uid": STUDY_UID,
        "series": [
            {"series_instance_uid": SERIES_UID, "role": "sag_t2", "used": True, "reason": "test"}
        ],
        "models": {
            "segmentation": {
                "name": "lumbar-seg-unet",
                "version": versions.get("seg", "1.0"),
                "sha256": "ab" * 32,
            },
            "grader_learned": {"name": "lumbar-grader", "version": versions.get("grader", "2.0")},
        },
        "levels": levels,
        "level_labelling": {"anchor": "sacrum", "ambiguous": False, "warnings": []},
        "findings": findings,
        "rsna": rsna,
        "timings_s": {},
    }


def make_study(
    directory: Path, scale: int = 1, slices: int = SLICES
) -> tuple[StudyAnatomy, dict[str, Path], np.ndarray]:
    labels = make_labels(scale, slices)
    files = write_series(directory / "dicom" / "sag_t2", labels)
    volume = load_volume(sorted(files.values()), role="sag_t2")
    # the assembled slice order is the label order (ascending position along the normal)
    order = [
        int(pydicom.dcmread(files[uid], stop_before_pixels=True).InstanceNumber) - 1
        for uid in volume.sop_instance_uids
    ]
    anatomy = StudyAnatomy(
        study_instance_uid=STUDY_UID,
        volumes={"sag_t2": volume},
        labels=labels[order],
        labels_role="sag_t2",
    )
    return anatomy, files, labels[order]


def findings_from_truth(truth: dict, volume: Volume) -> dict:
    """findings.json as a perfect grader would write it for this study."""
    findings, levels = [], []
    for condition, side, level in finding_keys():
        record = truth["levels"][level]
        grade = record["grades"][rsna_key(condition, side, level).rsplit("_", 2)[0]]
        centre = np.asarray(
            record["disc_centre_lps"]
            if condition == CANAL
            else record[
                "foramen_centre_lps" if condition == FORAMEN else "subarticular_centre_lps"
            ][side]
        )
        slice_index = int(
            np.clip(np.rint(volume.lps_to_index(centre)[0]), 0, volume.array.shape[0] - 1)
        )
        on_slice = volume.index_to_lps(np.r_[slice_index, volume.lps_to_index(centre)[1:]])
        row, col = volume.affine[:3, 1] / 2, volume.affine[:3, 2] / 2
        corners = [
            on_slice + a * 10 * row + b * 10 * col for a, b in ((-1, -1), (-1, 1), (1, 1), (1, -1))
        ]
        probabilities = [0.05, 0.05, 0.05]
        probabilities[GRADES.index(grade)] = 0.9
        findings.append(
            {
                "level": level,
                "condition": condition,
                "side": side,
                "grade": grade,
                "probabilities": probabilities,
                "assessable": True,
                "reason": None,
                "grader": "learned",
                "model_version": "3.1",
                "roi": {
                    "series_instance_uid": volume.series_instance_uid,
                    "slice": slice_index,
                    "corners_lps": np.round(corners, 3).tolist(),
                },
            }
        )
    for level, record in truth["levels"].items():
        levels.append(
            {
                "level": level,
                "disc_centre_lps": record["disc_centre_lps"],
                "warnings": [],
                "measurements": [
                    {"name": "canal_ap_diameter", "value": record["canal_ap_mm"], "unit": "mm"},
                    {
                        "name": "disc_height_anterior",
                        "value": record["disc_height_anterior_mm"],
                        "unit": "mm",
                    },
                ],
            }
        )
    return {
        "schema": "lumbar-node/findings/1",
        "status": "partial",
        "reason": None,
        "study_instance_uid": truth["study_instance_uid"],
        "series": [],
        "models": {
            "segmentation": {"name": "lumbar-seg", "version": "0.9"},
            "grader_learned": {"name": "lumbar-grader", "version": "3.1"},
        },
        "levels": levels,
        "findings": findings,
        "rsna": {},
        "timings_s": {},
    }


__all__ = ["findings_from_truth", "make_findings", "make_study"]
