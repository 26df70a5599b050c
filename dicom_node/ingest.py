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
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import NodeConfig
from dicom_node.db.models import Instance
from dicom_node.instance_index import AlreadyIndexed, InstanceIndex, Received, StudyFull
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


def quiet_value_checks() -> None:
    """For receiving processes: pydicom's per-value checks on read only warn (never refuse),
    and each UID it decodes runs a regex, a tenth of the receiver's CPU per instance. The
    attributes the node acts on are checked here (``validate_uid``, pixel length) and bad
    ones refused; the rest are kept as sent, so the warnings told nobody anything."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


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
    """Shared by every thread of one process; holds the index's id caches."""

    def __init__(self, config: NodeConfig, sessions: sessionmaker[Session]) -> None:
        self.config = config
        self.sessions = sessions
        self.spool = Spool(config.spool)
        self.index = InstanceIndex(config.max_instances_per_study)

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
            uids = (sop_uid, study_uid,
                    validate_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID"))
            sop_class = validate_uid(ds.get("SOPClassUID"), "SOPClassUID")
        except ValueError as exc:
            raise IngestError(INVALID_UID, str(exc)) from None
        if expected_sop_uid is not None and expected_sop_uid.rstrip("\x00") != sop_uid:
            raise IngestError(SOP_MISMATCH, f"dataset SOPInstanceUID {sop_uid} differs from the "
                              f"request's {expected_sop_uid!r}")
        if sop_class not in STORAGE_CLASSES:
            raise IngestError(SOP_CLASS_NOT_SUPPORTED, f"SOP class {sop_class} not accepted")
        path = self.spool.path_for(study_uid, sop_uid)
        if path.exists() and self._indexed(sop_uid):
            # a PACS re-sending a study: answer without writing and fsyncing a copy first
            return Stored(sop_uid, study_uid, duplicate=True)
        item = _received(ds, uids, sop_class, data, path, source, ae_title, ip)
        try:
            staged = self.spool.stage(path, data)
        except OSError as exc:
            why = "disk full" if exc.errno == errno.ENOSPC else f"spool write failed: {exc}"
            raise IngestError(OUT_OF_RESOURCES, why) from None
        try:
            return Stored(sop_uid, study_uid, duplicate=self._index(item, staged, path))
        finally:
            staged.unlink(missing_ok=True)

    def _index(self, item: Received, staged: Path, path: Path) -> bool:
        """Index with a few retries; a failed transaction never leaves a placed file behind."""
        for attempt in range(3):
            placed = False

            def place() -> None:
                nonlocal placed
                self.spool.place(staged, path)
                placed = True

            try:
                with self.sessions() as session, session.begin():
                    learned = self.index.add(session.connection(), item, place)
                self.index.committed(learned)
                return False
            except AlreadyIndexed:
                return True
            except StudyFull as exc:
                self._unplace(placed, path)
                raise IngestError(OUT_OF_RESOURCES, str(exc)) from None
            except IntegrityError:
                # a cached study/series row that is gone, or a race on a new one: start over
                self._unplace(placed, path)
                self.index.forget()
                if attempt == 2:
                    raise IngestError(OUT_OF_RESOURCES, "concurrent index conflict") from None
            except SQLAlchemyError as exc:
                self._unplace(placed, path)
                raise _database_unavailable(exc) from None
            except OSError as exc:
                raise IngestError(OUT_OF_RESOURCES, f"spool write failed: {exc}") from None
        raise AssertionError("unreachable")

    def _indexed(self, sop_uid: str) -> bool:
        try:
            with self.sessions() as session:
                return session.scalar(select(Instance.id).where(
                    Instance.sop_instance_uid == sop_uid)) is not None
        except SQLAlchemyError as exc:
            raise _database_unavailable(exc) from None

    @staticmethod
    def _unplace(placed: bool, path: Path) -> None:
        if placed:
            path.unlink(missing_ok=True)


def _database_unavailable(exc: SQLAlchemyError) -> IngestError:
    """The sender is told to retry later (0xA700), with the driver's own words."""
    orig = getattr(exc, "orig", None) or exc
    return IngestError(OUT_OF_RESOURCES, f"database unavailable: {orig}")


def _received(ds: Dataset, uids: tuple[str, str, str], sop_class: str, data: bytes,
              path: Path, source: str, ae_title: str | None, ip: str | None) -> Received:
    """The indexed attributes; one that pydicom cannot decode refuses the instance."""
    try:
        return Received(
            sop_instance_uid=uids[0], study_instance_uid=uids[1], series_instance_uid=uids[2],
            sop_class_uid=sop_class, sop_class_name=STORAGE_CLASSES[sop_class],
            transfer_syntax_uid=str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")),
            patient_id=_text(ds, "PatientID", 64),
            accession_number=_text(ds, "AccessionNumber", 64),
            modality=_text(ds, "Modality", 16),
            series_description=_text(ds, "SeriesDescription", 64) or "",
            series_number=_int(ds.get("SeriesNumber")),
            instance_number=_int(ds.get("InstanceNumber")), path=str(path),
            size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), source=source,
            ae_title=ae_title, ip=ip)
    except Exception as exc:  # pydicom raises many types for values it cannot convert
        raise IngestError(CANNOT_UNDERSTAND, f"unreadable attribute: {type(exc).__name__}: "
                          f"{exc}") from None


def _text(ds: Dataset, keyword: str, limit: int) -> str | None:
    return str(ds.get(keyword, "") or "")[:limit] or None


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None

