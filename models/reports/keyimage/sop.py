"""Secondary Capture key image and the Key Object Selection document that flags it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import RLELossless

from models.reports.equipment import MANUFACTURER, Algorithm, copy_patient_study, device_observer
from models.reports.frames import plane
from models.reports.keyimage.render import NOTICE, render

SERIES_DESCRIPTION = "AI lumbar key image"
KOS_SERIES_DESCRIPTION = "AI lumbar key objects"


def orientation_letters(direction: Sequence[float]) -> str:
    """Patient orientation letters of an LPS direction, strongest component first."""
    v = np.asarray(direction, dtype=np.float64)
    letters = ("LR", "PA", "HF")
    order = np.argsort(-np.abs(v))
    out = "".join(letters[a][0 if v[a] > 0 else 1] for a in order if abs(v[a]) > 0.25)
    if not out:
        raise ValueError(f"direction {direction!r} is not a unit vector")
    return out


def build_key_image(
    source: Dataset,
    pixels: np.ndarray,
    labels: np.ndarray | None,
    findings: Sequence[Mapping],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = 9003,
    contributing_equipment: Sequence[hd.ContributingEquipment] | None = None,
    transfer_syntax_uid: str = RLELossless,
    frame: int | None = None,
    discs: Sequence[Mapping] = (),
) -> hd.sc.SCImage:
    """Key image of ``pixels`` (the slice of ``source``) with outlines and the grade table.

    The image part keeps the slice's orientation (rows along IOP column direction) but is
    rescaled to square pixels, so PatientOrientation is given and PixelSpacing is not.
    RLE Lossless by default: every PACS decodes it, it keeps burned-in text exact and it
    makes the object less than half the size of the uncompressed one. ``frame`` is the
    slice's frame when ``source`` is a multi-frame image.
    """
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "Rows", "Columns"):
        if keyword not in source:
            raise ValueError(f"source image lacks {keyword}; cannot place the key image")
    if tuple(pixels.shape) != (int(source.Rows), int(source.Columns)):
        raise ValueError(
            f"slice {pixels.shape} does not match the source image "
            f"{(int(source.Rows), int(source.Columns))}"
        )
    iop, spacing = plane(source, frame)
    # columns running posteriorly (+y in LPS) put the patient's front on the left
    rgb = render(pixels, labels, spacing, findings, anterior_left=iop[1] > 0, discs=discs)
    sc = hd.sc.SCImage(
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        study_instance_uid=str(source.StudyInstanceUID),
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_id=source.get("PatientID"),
        patient_name=source.get("PatientName"),
        patient_birth_date=source.get("PatientBirthDate"),
        patient_sex=source.get("PatientSex") or None,
        accession_number=source.get("AccessionNumber"),
        study_id=source.get("StudyID"),
        study_date=source.get("StudyDate"),
        study_time=source.get("StudyTime"),
        referring_physician_name=source.get("ReferringPhysicianName"),
        patient_orientation=(orientation_letters(iop[:3]), orientation_letters(iop[3:])),
        contributing_equipment=contributing_equipment,
        transfer_syntax_uid=transfer_syntax_uid,
    )
    copy_patient_study(source, sc)
    sc.SeriesDescription = SERIES_DESCRIPTION
    # General Series asks for Laterality (type 2C) on images of the patient; the lumbar
    # spine is unpaired, so it is present and empty.
    sc.Laterality = None
    sc.BurnedInAnnotation = "YES"
    # ImageComments uses the default character repertoire, which has no em dash
    sc.ImageComments = NOTICE.replace("\u2014", "-")
    sc.ImageType = ["DERIVED", "SECONDARY"]
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if frame is not None:
        ref.ReferencedFrameNumber = frame
    sc.SourceImageSequence = [ref]
    return sc


def build_kos(
    key_image: Dataset,
    algorithm: Algorithm,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = 9004,
) -> hd.ko.KeyObjectSelectionDocument:
    """KOS ("Of Interest") pointing at the key image, so PACS flag it for the reader."""
    if "SOPInstanceUID" not in key_image or "StudyInstanceUID" not in key_image:
        raise ValueError("key_image must be a DICOM image with SOP and study instance UIDs")
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.OfInterest,
        referenced_objects=[key_image],
        observer_device_context=device_observer(algorithm),
        description="AI lumbar stenosis grades and labelled levels",
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=[key_image],
        content=content,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
    )
    kos.SeriesDescription = KOS_SERIES_DESCRIPTION
    return kos
