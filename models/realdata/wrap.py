"""Real slices written as a DICOM MR study, so they reach the pipeline the way a PACS sends
a study: through series selection, volume assembly and every later step, with nothing
bypassed. Geometry follows the slices' own layout (rows head->feet, columns
anterior->posterior, slices left->right); values no PNG carries (timing, vendor) are the
nominal ones of the sequence and are marked as such in the series description.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1439.2"
#: rows run head->feet (-z), columns anterior->posterior (+y) in LPS
SAGITTAL_IOP = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]


def uid_for(*parts: object) -> str:
    digest = hashlib.sha256("/".join(["lumbar-node-realdata", *map(str, parts)]).encode())
    return f"2.25.{int.from_bytes(digest.digest()[:16], 'big')}"


@dataclass(frozen=True)
class SeriesSpec:
    """What a real series' header says about it (or the sequence's nominal values)."""

    description: str
    tr_ms: float
    te_ms: float
    field_strength_t: float = 3.0
    manufacturer: str = "SIEMENS"
    series_number: int = 1


def _ds(value: float) -> str:
    return f"{value:.6g}"


def write_sagittal_series(out_dir: Path, patient: str, images: np.ndarray,
                          pixel_mm: tuple[float, float], slice_mm: float,
                          spec: SeriesSpec) -> list[Path]:
    """Write ``images`` [slice, row, col] as one sagittal MR series; returns the files."""
    images = np.asarray(images)
    if images.ndim != 3 or min(images.shape) < 1:
        raise ValueError(f"images must be [slice, row, col], got shape {images.shape}")
    if min(pixel_mm) <= 0 or slice_mm <= 0:
        raise ValueError(f"spacings must be positive, got {pixel_mm} and {slice_mm}")
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid = uid_for(patient, "study")
    series_uid = uid_for(patient, "series", spec.description, spec.series_number)
    n, rows, cols = images.shape
    files = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = uid_for(patient, series_uid, k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = uid_for(patient, "frame")
        ds.PatientID = f"SPIDER-{patient}"
        ds.PatientName = f"SPIDER^{patient}"
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyDate, ds.StudyTime = "20240101", "120000"
        ds.StudyID, ds.AccessionNumber = "1", f"SP{patient}"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "MR LUMBAR SPINE"
        ds.BodyPartExamined = "LSPINE"
        ds.Modality = "MR"
        ds.Manufacturer = spec.manufacturer
        ds.MagneticFieldStrength = _ds(spec.field_strength_t)
        ds.SeriesDescription = spec.description
        ds.SeriesNumber = spec.series_number
        ds.InstanceNumber = k + 1
        ds.ScanningSequence, ds.SequenceVariant = "SE", "SK"
        ds.ScanOptions, ds.MRAcquisitionType = "", "2D"
        ds.RepetitionTime, ds.EchoTime = _ds(spec.tr_ms), _ds(spec.te_ms)
        ds.SliceThickness = _ds(slice_mm)
        ds.SpacingBetweenSlices = _ds(slice_mm)
        ds.ImageOrientationPatient = [_ds(v) for v in SAGITTAL_IOP]
        x = (k - (n - 1) / 2) * slice_mm
        y0, z0 = -cols * pixel_mm[1] / 2, rows * pixel_mm[0] / 2
        ds.ImagePositionPatient = [_ds(x), _ds(y0), _ds(z0)]
        ds.PixelSpacing = [_ds(pixel_mm[0]), _ds(pixel_mm[1])]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(images[k], dtype=np.uint16).tobytes()
        path = out_dir / f"{spec.series_number:02d}_{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files
