"""One path from received bytes to a spooled, indexed, audited instance.

Both C-STORE and STOW-RS come through here, so the rules (UID checks, limits, duplicates,
late instances re-opening a processed study) hold whichever way a study arrives.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit
from dicom_node.config import NodeConfig
from dicom_node.db.models import Instance, Series, Study, utcnow
from dicom_node.sop_classes import STORAGE_CLASSES
from dicom_node.spool import Spool
from dicom_node.uids import validate_uid

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC210
INVALID_UID = 0xC211
SOP_MISMATCH = 0xC212


class IngestError(Exception):
    """Refusal with the DIMSE status that tells the sender what went wrong."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Stored:
    sop_instance_uid: str
    study_instance_uid: str
    duplicate: bool


def _parse(data: bytes) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        ds.SOPInstanceUID  # noqa: B018  (forces parsing of the dataset body)
        # decode the identifying elements now: a value pydicom cannot convert (unknown VR,
        # bad length) must be a refusal here, not an unexpected error further on
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                        "SOPClassUID", "PatientID", "Modality"):
            ds.get(keyword)
        _check_pixels(ds)
    except IngestError:
        raise
    except Exception as exc:  # pydicom raises many types for malformed data
        raise IngestError(
            CANNOT_UNDERSTAND, f"unparseable dataset: {type(exc).__name__}: {exc}"
        ) from None
    return ds


def _check_pixels(ds: Dataset) -> None:
    """Truncated native pixel data is a broken instance, not something to analyse later."""
    if "PixelData" not in ds or ds.file_meta.get("TransferSyntaxUID", "") not in (
        pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian,
        pydicom.uid.ExplicitVRBigEndian,
    ):
        return
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames
        expected = expected * int(ds.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError) as exc:
        raise IngestError(CANNOT_UNDERSTAND, f"pixel description unreadable: {exc}") from None
    actual = len(ds.PixelData)
    if actual < expected:
        raise IngestError(
            CANNOT_UNDERSTAND, f"pixel data truncated: {actual} bytes, {expected} expected"
        )


class Ingestor:
    def __init__(self, config: NodeConfig, sessions: sessionmaker[Session]) -> None:
        self.config = config
        self.sessions = sessions
        self.spool = Spool(config.spool)

    def store(
        self,
        data: bytes,
        *,
        source: str,
        ae_title: str | None = None,
        ip: str | None = None,
        expected_sop_uid: str | None = None,
    ) -> Stored:
        if len(data) > self.config.max_instance_bytes:
            raise IngestError(
                OUT_OF_RESOURCES,
                f"instance of {len(data)} bytes exceeds the limit {self.config.max_instance_bytes}",
            )
        ds = _parse(data)
        try:
            sop_uid = validate_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID")
            study_uid = validate_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
            validate_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
            sop_class = validate_uid(ds.get("SOPClassUID"), "SOPClassUID")
        except ValueError as exc:
            raise IngestError(INVALID_UID, str(exc)) from None
        if expected_sop_uid is not None and expected_sop_uid.rstrip("\x00") != sop_uid:
            raise IngestError(SOP_MISMATCH, f"dataset SOPInstanceUID {sop_uid} differs from the "
                              f"request's {expected_sop_uid!r}")
        if sop_class not in STORAGE_CLASSES:
            raise IngestError(SOP_CLASS_NOT_SUPPORTED, f"SOP class {sop_class} not accepted")
        transfer_syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(
            ds, "file_meta") else ""

        try:
            with self.sessions() as session:
                existing = session.scalar(
                    select(Instance.id).where(Instance.sop_instance_uid == sop_uid))
            if existing is not None:
                return Stored(sop_uid, study_uid, duplicate=True)
        except OperationalError as exc:
            raise IngestError(OUT_OF_RESOURCES, f"database unavailable: {exc.orig}") from None

        try:
            path = self.spool.write(study_uid, sop_uid, data)
        except OSError as exc:
            status = OUT_OF_RESOURCES
            why = "disk full" if exc.errno == errno.ENOSPC else f"spool write failed: {exc}"
            raise IngestError(status, why) from None
        digest = hashlib.sha256(data).hexdigest()
        for attempt in range(3):
            try:
                with self.sessions() as session, session.begin():
                    dup = self._index(session, ds, path, digest, len(data), transfer_syntax,
                                      source, ae_title, ip)
                return Stored(sop_uid, study_uid, duplicate=dup)
            except IntegrityError:
                if attempt == 2:
                    raise IngestError(OUT_OF_RESOURCES, "concurrent index conflict") from None
            except IngestError:
                path.unlink(missing_ok=True)
                raise
            except SQLAlchemyError as exc:
                path.unlink(missing_ok=True)
                raise IngestError(OUT_OF_RESOURCES, f"database unavailable: {exc}") from None
        raise AssertionError("unreachable")

    def _index(
        self, session: Session, ds: Dataset, path: Path, digest: str, size: int,
        transfer_syntax: str, source: str, ae_title: str | None, ip: str | None,
    ) -> bool:
        sop_uid, study_uid = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)
        if session.scalar(select(Instance.id).where(Instance.sop_instance_uid == sop_uid)):
            return True
        now = utcnow()
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        patient_id = str(ds.get("PatientID", "") or "")[:64] or None
        if study is None:
            study = Study(study_instance_uid=study_uid, patient_id=patient_id,
                          accession_number=str(ds.get("AccessionNumber", "") or "")[:64] or None,
                          calling_ae=ae_title, calling_ip=ip, first_received_at=now,
                          last_received_at=now, instance_count=0)
            session.add(study)
            session.flush()
            audit.record(session, "study.first_instance", study_uid=study_uid,
                         patient_id=patient_id, ae_title=ae_title, ip=ip, source=source)
        if source != "result":
            if study.instance_count >= self.config.max_instances_per_study:
                raise IngestError(OUT_OF_RESOURCES, f"study holds {study.instance_count} "
                                  f"instances, the limit is {self.config.max_instances_per_study}")
            study.instance_count += 1
            study.last_received_at = now
            if study.state != "receiving":
                audit.record(session, "study.reopened", study_uid=study_uid,
                             patient_id=study.patient_id, ae_title=ae_title, ip=ip,
                             previous_state=study.state, sop_instance_uid=sop_uid)
                study.state = "receiving"
                study.reason, study.checked_at = None, None
            if ae_title:
                study.calling_ae, study.calling_ip = ae_title, ip
        modality = str(ds.get("Modality", "") or "")[:16] or None
        series_uid = str(ds.SeriesInstanceUID)
        series = session.scalar(select(Series).where(Series.series_instance_uid == series_uid))
        if series is None:
            series = Series(study_id=study.id, series_instance_uid=series_uid, modality=modality,
                            series_description=str(ds.get("SeriesDescription", "") or "")[:64],
                            series_number=_int(ds.get("SeriesNumber")),
                            is_result=source == "result", instance_count=0)
            session.add(series)
            session.flush()
        series.instance_count += 1
        mods = set(filter(None, (study.modalities or "").split("\\"))) | ({modality} - {None})
        study.modalities = "\\".join(sorted(m for m in mods if m))[:64]
        session.add(Instance(series_id=series.id, sop_instance_uid=sop_uid,
                             sop_class_uid=str(ds.SOPClassUID),
                             transfer_syntax_uid=transfer_syntax,
                             instance_number=_int(ds.get("InstanceNumber")), path=str(path),
                             size_bytes=size, sha256=digest, received_at=now, source=source))
        audit.record(session, "instance.stored", study_uid=study_uid, patient_id=study.patient_id,
                     ae_title=ae_title, ip=ip, source=source, sop_instance_uid=sop_uid,
                     series_instance_uid=series_uid,
                     sop_class=STORAGE_CLASSES.get(str(ds.SOPClassUID), str(ds.SOPClassUID)))
        return False


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None

