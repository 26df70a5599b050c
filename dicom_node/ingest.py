"""One path from received bytes to a spooled, indexed, audited instance.

Both C-STORE and STOW-RS come through here, so the rules (UID checks, limits, duplicates,
late instances re-opening a processed study) hold whichever way a study arrives.

With an :class:`~dicom_node.indexer.Indexer` (the receiving processes of `serve`) the spool
is the record: the instance is parsed and checked, made durable in the spool and
acknowledged, and the index row follows in the writer's next batch. Without one (result
objects from a worker, a pull) the instance is indexed before ``store`` returns, as callers
that read the row straight after expect.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import NodeConfig
from dicom_node.db.models import Instance
from dicom_node.instance_index import AlreadyIndexed, InstanceIndex, Received, StudyFull
from dicom_node.sop_classes import STORAGE_CLASSES
from dicom_node.spool import Spool
from dicom_node.uids import validate_uid

if TYPE_CHECKING:
    from dicom_node.indexer import Indexer

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

    def __init__(self, config: NodeConfig, sessions: sessionmaker[Session],
                 indexer: Indexer | None = None) -> None:
        self.config = config
        self.sessions = sessions
        self.spool = Spool(config.spool)
        self.indexer = indexer
        if indexer is not None:
            self.spool.root.mkdir(parents=True, exist_ok=True)  # statvfs'd before each write
        self.index = indexer.index if indexer else InstanceIndex(config.max_instances_per_study)
        self._lock = threading.Lock()
        #: files spooled per study by this process (counted from the folder on first sight):
        #: the study limit is checked before answering, without the database
        self._spooled: dict[str, int] = {}

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
        ds, uids, sop_class = _examine(data, expected_sop_uid)
        sop_uid, study_uid = uids[0], uids[1]
        path = self.spool.path_for(study_uid, sop_uid)
        if self.indexer is not None:
            return self._spool_first(ds, uids, sop_class, data, path, source, ae_title, ip)
        if path.exists() and self._indexed(sop_uid):
            # a PACS re-sending a study: answer without writing and fsyncing a copy first
            return Stored(sop_uid, study_uid, duplicate=True)
        item = _received(ds, uids, sop_class, data, path, source, ae_title, ip)
        staged = self._stage(path, data)
        try:
            return Stored(sop_uid, study_uid, duplicate=self._index(item, staged, path))
        finally:
            staged.unlink(missing_ok=True)

    def _spool_first(self, ds: Dataset, uids: tuple[str, str, str], sop_class: str,
                     data: bytes, path: Path, source: str, ae_title: str | None,
                     ip: str | None) -> Stored:
        """Durable in the spool, handed to the indexer, acknowledged: no database on the
        way. A file already at the instance's path is a re-sent instance (the path is the
        hash of study and SOP UID), answered without writing a copy."""
        assert self.indexer is not None
        sop_uid, study_uid = uids[0], uids[1]
        if path.exists():
            return Stored(sop_uid, study_uid, duplicate=True)
        self._check_room(len(data), study_uid, path)
        item = _received(ds, uids, sop_class, data, path, source, ae_title, ip)
        staged = self._stage(path, data)
        try:
            placed = self.spool.place_new(staged, path)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise IngestError(OUT_OF_RESOURCES, f"spool write failed: {exc}") from None
        if not placed:  # the same instance on another association, a moment earlier
            return Stored(sop_uid, study_uid, duplicate=True)
        with self._lock:
            self._spooled[study_uid] = self._spooled.get(study_uid, 0) + 1
        self.indexer.submit(item)
        return Stored(sop_uid, study_uid, duplicate=False)

    def _check_room(self, size: int, study_uid: str, path: Path) -> None:
        """The spool bound (backlog awaiting the index, free-disk floor) and the study limit,
        checked before anything is written, so a refusal leaves nothing half-written."""
        assert self.indexer is not None
        config = self.config
        pending = self.indexer.pending_bytes
        if pending + size > config.spool_max_pending_bytes:
            raise IngestError(OUT_OF_RESOURCES, f"spool backlog full: {pending} bytes await "
                              f"the index (SPOOL_MAX_PENDING_BYTES "
                              f"{config.spool_max_pending_bytes})")
        disk = os.statvfs(self.spool.root)
        free = disk.f_bavail * disk.f_frsize
        if free - size < config.spool_min_free_bytes:
            raise IngestError(OUT_OF_RESOURCES, f"disk nearly full: {free} bytes free, the "
                              f"floor is {config.spool_min_free_bytes} (SPOOL_MIN_FREE_BYTES)")
        with self._lock:
            count = self._spooled.get(study_uid)
        if count is None:
            folder = path.parent
            count = sum(1 for n in os.listdir(folder) if n.endswith(".dcm")) \
                if folder.is_dir() else 0
            with self._lock:
                if len(self._spooled) >= 4096:  # forget the oldest studies first
                    del self._spooled[next(iter(self._spooled))]
                self._spooled[study_uid] = count
        if count >= config.max_instances_per_study:
            raise IngestError(OUT_OF_RESOURCES, f"study holds {count} instances, the limit "
                              f"is {config.max_instances_per_study}")

    def _stage(self, path: Path, data: bytes) -> Path:
        try:
            return self.spool.stage(path, data)
        except OSError as exc:
            why = "disk full" if exc.errno == errno.ENOSPC else f"spool write failed: {exc}"
            raise IngestError(OUT_OF_RESOURCES, why) from None

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


def _examine(data: bytes, expected_sop_uid: str | None = None) -> tuple[
        Dataset, tuple[str, str, str], str]:
    """Parse and check what the node acts on; refusals carry the status to answer with."""
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
    return ds, uids, sop_class


def received_from_file(path: Path) -> Received:
    """What the sweep indexes for a spooled file whose receiver is gone. The file keeps the
    calling AE in its meta (0002,0016) when it came over DIMSE; the IP is not kept."""
    data = path.read_bytes()
    ds, uids, sop_class = _examine(data)
    meta = getattr(ds, "file_meta", None) or {}
    ae = str(meta.get("SourceApplicationEntityTitle", "") or "").strip() or None
    from_dimse = ae is not None and str(meta.get("ImplementationClassUID", "")) == \
        PYNETDICOM_IMPLEMENTATION_UID
    return _received(ds, uids, sop_class, data, path, "dimse" if from_dimse else "stow",
                     ae if from_dimse else None, None)


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

