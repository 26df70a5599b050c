"""Writing synthetic MR images as DICOM files the way three scanner vendors label them.

Every value that ends up in a file (UIDs, dates, vendor, timing) derives from the seed, so a
study is reproducible byte for byte.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from .series import SliceGeom

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1439.1"


def make_uid(seed: int, *parts: object) -> str:
    """Deterministic 2.25 UID from the seed and a path of names (a 128-bit hash in the
    UUID-derived form; pydicom's own 2.25 UIDs are random)."""
    text = "/".join(["lumbar-node-synth", str(seed), *map(str, parts)])
    digest = hashlib.sha256(text.encode()).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


@dataclass(frozen=True)
class Vendor:
    key: str
    manufacturer: str
    models: tuple[str, str]  # (1.5 T, 3 T)
    descriptions: dict[str, str]
    variant: str
    software: str


VENDORS = (
    Vendor("siemens", "SIEMENS", ("MAGNETOM Aera", "MAGNETOM Skyra"),
           {"sag_t1": "t1_tse_sag_{m}", "sag_t2": "t2_tse_sag_{m}",
            "sag_stir": "t2_tirm_sag_{m}", "ax_t2": "t2_tse_tra_{m}",
            "localizer": "localizer", "brain_t2": "t2_tse_tra_{m}", "brain_t1": "t1_se_sag"},
           "SK\\SP\\OSP", "syngo MR E11"),
    Vendor("ge", "GE MEDICAL SYSTEMS", ("Optima MR450w", "SIGNA Architect"),
           {"sag_t1": "SAG T1 FSE", "sag_t2": "SAG T2 FSE", "sag_stir": "SAG STIR",
            "ax_t2": "AX T2 FSE", "localizer": "3-PLANE LOC", "brain_t2": "AX T2 FSE BRAIN",
            "brain_t1": "SAG T1 FLAIR"},
           "SK\\OSP", "27\\LX\\MR Software release:RX27.0"),
    Vendor("philips", "Philips", ("Ingenia", "Ingenia Elition X"),
           {"sag_t1": "T1W_TSE SAG", "sag_t2": "T2W_TSE SAG", "sag_stir": "STIR SAG",
            "ax_t2": "T2W_TSE TRA", "localizer": "Survey", "brain_t2": "T2W_TSE TRA BRAIN",
            "brain_t1": "T1W_SE SAG"},
           "SK", "5.7.1\\5.7.1.2"),
)


@dataclass(frozen=True)
class StudyInfo:
    seed: int
    study_uid: str
    frame_of_reference_uid: str
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    study_date: str
    study_time: str
    accession: str
    vendor: Vendor
    field_strength: float
    body_part: str = "LSPINE"
    study_description: str = "MR LUMBAR SPINE"


def study_info(seed: int, rng: np.random.Generator, body_part: str = "LSPINE") -> StudyInfo:
    vendor = VENDORS[int(rng.integers(len(VENDORS)))]
    day = _dt.date(2023, 1, 2) + _dt.timedelta(days=int(rng.integers(0, 700)))
    age = int(rng.integers(25, 86))
    birth = day.replace(year=day.year - age, day=min(day.day, 28))
    minutes = int(rng.integers(7 * 60, 19 * 60))
    return StudyInfo(
        seed=seed,
        study_uid=make_uid(seed, "study"),
        frame_of_reference_uid=make_uid(seed, "frame-of-reference"),
        patient_id=f"SYN{seed:04d}",
        patient_name=f"SYNTHETIC^{seed:04d}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=str(rng.choice(["F", "M"])),
        study_date=day.strftime("%Y%m%d"),
        study_time=f"{minutes // 60:02d}{minutes % 60:02d}00",
        accession=f"A{seed:07d}",
        vendor=vendor,
        field_strength=float(rng.choice([1.5, 3.0])),
        body_part=body_part,
        study_description="MR LUMBAR SPINE" if body_part == "LSPINE" else "MR BRAIN",
    )


@dataclass(frozen=True)
class Timing:
    repetition: float
    echo: float
    inversion: float | None
    echo_train: int


def timing(weighting: str, field_strength: float, rng: np.random.Generator) -> Timing:
    if weighting == "T1":
        return Timing(round(rng.uniform(450, 750), 1), round(rng.uniform(8, 14), 2), None,
                      int(rng.integers(3, 6)))
    if weighting == "T2":
        return Timing(round(rng.uniform(2800, 4800), 1), round(rng.uniform(85, 115), 2), None,
                      int(rng.integers(15, 25)))
    if weighting == "STIR":
        ti = rng.uniform(140, 160) if field_strength < 2 else rng.uniform(200, 230)
        return Timing(round(rng.uniform(3500, 5500), 1), round(rng.uniform(40, 58), 2),
                      round(ti, 1), int(rng.integers(10, 18)))
    raise ValueError(f"unknown weighting {weighting!r}")


def _ds(x: float) -> str:
    """Decimal string that fits the 16-character DS limit."""
    return f"{x:.6g}" if abs(x) < 1e6 else f"{x:.8e}"


def build_dataset(
    info: StudyInfo,
    *,
    series_uid: str,
    series_number: int,
    description: str,
    geom: SliceGeom,
    pixels: np.ndarray,
    sop_uid: str,
    instance_number: int,
    acquisition_number: int,
    spacing_between: float,
    tim: Timing,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "OTHER"),
) -> Dataset:
    """One MR Image Storage instance, explicit VR little endian, MONOCHROME2 uint16."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "LUMBARNODE_1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(image_type)
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = info.study_date
    ds.StudyTime = info.study_time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = _series_time(info, series_number)
    ds.AccessionNumber = info.accession
    ds.Modality = "MR"
    ds.Manufacturer = info.vendor.manufacturer
    ds.InstitutionName = "Synthetic Imaging Centre"
    ds.ReferringPhysicianName = "REFERRER^SYNTHETIC"
    ds.StationName = f"SYNMR{info.seed % 7}"
    ds.StudyDescription = info.study_description
    ds.SeriesDescription = description
    ds.ManufacturerModelName = info.vendor.models[1 if info.field_strength > 2 else 0]
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = info.birth_date
    ds.PatientSex = info.sex
    ds.PatientAge = f"{int(info.study_date[:4]) - int(info.birth_date[:4]):03d}Y"
    ds.BodyPartExamined = info.body_part
    inversion = tim.inversion is not None
    ds.ScanningSequence = ["SE", "IR"] if inversion else "SE"
    ds.SequenceVariant = (info.vendor.variant.split("\\") + (["MP"] if inversion else []))
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = ("*tir2d1_" if inversion else "*tse2d1_") + str(tim.echo_train)
    ds.SliceThickness = _ds(geom.thickness)
    ds.RepetitionTime = _ds(tim.repetition)
    ds.EchoTime = _ds(tim.echo)
    if inversion:
        ds.InversionTime = _ds(float(tim.inversion or 0.0))
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = _ds(42.577478 * info.field_strength)
    ds.MagneticFieldStrength = _ds(info.field_strength)
    ds.SpacingBetweenSlices = _ds(spacing_between)
    ds.EchoTrainLength = tim.echo_train
    ds.SoftwareVersions = info.vendor.software
    ds.ProtocolName = description
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = str(info.seed % 100000)
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = acquisition_number
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [_ds(float(x)) for x in geom.ipp]
    ds.ImageOrientationPatient = [_ds(float(x)) for x in (*geom.rowdir, *geom.coldir)]
    ds.FrameOfReferenceUID = info.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(float(geom.ipp @ geom.normal))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.PixelSpacing = [_ds(geom.spacing[0]), _ds(geom.spacing[1])]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    lo, hi = np.percentile(pixels, [1.0, 99.5]) if pixels.size else (0.0, 1.0)
    ds.WindowCenter = _ds(round(float(lo + hi) / 2))
    ds.WindowWidth = _ds(max(round(float(hi - lo)), 1))
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def _series_time(info: StudyInfo, series_number: int) -> str:
    h, m = int(info.study_time[:2]), int(info.study_time[2:4])
    order = series_number // 100 if series_number >= 100 else series_number
    total = h * 3600 + m * 60 + 200 * order
    return f"{(total // 3600) % 24:02d}{(total // 60) % 60:02d}{total % 60:02d}"


def save(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
