"""Small DICOM files for PACS routing tests, built with pydicom.

Routing only looks at headers, so the images are tiny (16×16); what matters is that the files
are valid Part 10 objects a real PACS accepts and that their headers say what a scanner or the
node would say (Modality, BodyPartExamined, SeriesDescription, Manufacturer).
"""

from __future__ import annotations

from pathlib import Path

from load import mr_instance
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
NODE_MANUFACTURER = "lumbar-node"


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _study_header(ds: Dataset, study_uid: str, patient_id: str, study_description: str) -> None:
    ds.PatientName = f"TEST^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20260101"
    ds.StudyTime = "080000"
    ds.StudyID = "1"
    ds.AccessionNumber = patient_id
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description


def make_mr_series(
    out_dir: Path,
    *,
    study_uid: str | None = None,
    patient_id: str = "PACS0001",
    study_description: str = "MR L-SPINE W/O CONTRAST",
    series_description: str = "SAG T2 TSE",
    body_part: str = "LSPINE",
    slices: int = 3,
    manufacturer: str = "ACME MR",
) -> list[Path]:
    """A sagittal MR series of `slices` 16×16 images; returns the written paths in order.

    The image is the benchmarks' `load.mr_instance`; the headers a PACS routes on and shows
    (study description, manufacturer, patient and study modules) are set here."""
    if slices < 1:
        raise ValueError(f"slices must be >= 1, got {slices}")
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    paths = []
    for index in range(slices):
        ds = mr_instance(study_uid, series_uid, index, plane="sagittal", te=100.0, tr=3000.0,
                         description=series_description, body_part=body_part,
                         FrameOfReferenceUID=frame_uid, SeriesNumber=2,
                         Manufacturer=manufacturer, SequenceVariant="SK",
                         MRAcquisitionType="2D")
        _study_header(ds, study_uid, patient_id, study_description)
        path = out_dir / f"IM{index + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _dcm_concept(value: str, meaning: str) -> DicomSequence:
    """A concept name from DICOM's own coding scheme (DCM), as an SR content item needs."""
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
    return DicomSequence([code])


def make_result_sr(source: Dataset, out_path: Path, text: str = "L4-L5 canal: Moderate") -> Path:
    """A Comprehensive 3D SR in the source's study, headed like the node's results."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(COMPREHENSIVE_3D_SR, sop_uid)
    ds.SOPClassUID = COMPREHENSIVE_3D_SR
    ds.SOPInstanceUID = sop_uid
    _study_header(ds, source.StudyInstanceUID, source.PatientID, source.StudyDescription)
    ds.PatientName = source.PatientName
    ds.Modality = "SR"
    ds.Manufacturer = NODE_MANUFACTURER
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9901
    ds.SeriesDescription = "AI lumbar stenosis report"
    ds.InstanceNumber = 1
    ds.ContentDate = "20260101"
    ds.ContentTime = "090000"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ConceptNameCodeSequence = _dcm_concept("126000", "Imaging Measurement Report")
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = _dcm_concept("121071", "Finding")
    item.TextValue = text
    ds.ContentSequence = DicomSequence([item])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out_path, enforce_file_format=True)
    return out_path
