"""The ingest hot path: duplicates, limits, late instances and concurrency, on both databases.

Every case checks the database rows and the spool files together: the rule is one row and
one file per SOP instance, the file's bytes matching the row's sha256, and nothing staged
left behind.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from load import UID_ROOT, mr_instance
from pydicom.filebase import DicomBytesIO
from pydicom.uid import generate_uid
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import NodeConfig
from dicom_node.db.models import AuditEvent, Instance, Series, Study
from dicom_node.db.session import make_engine, make_sessionmaker
from dicom_node.indexer import Indexer
from dicom_node.ingest import OUT_OF_RESOURCES, IngestError, Ingestor
from dicom_node.instance_index import InstanceIndex


def _encode(study_uid: str, series_uid: str, index: int, *, sop_uid: str | None = None,
            patient_id: str = "NODE0001") -> bytes:
    ds = mr_instance(study_uid, series_uid, index, plane="sagittal", te=100, tr=3000,
                     sop_uid=sop_uid, patient_id=patient_id)
    buf = DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _spool_state(spool: Path) -> tuple[list[Path], list[Path]]:
    files = sorted(spool.rglob("*.dcm")) if spool.exists() else []
    staged = sorted(spool.rglob(".incoming-*")) if spool.exists() else []
    return files, staged


def _rows(sessions: sessionmaker[Session]) -> list[Instance]:
    with sessions() as s:
        return list(s.scalars(select(Instance).order_by(Instance.id)))


def test_duplicate_keeps_the_first_copy(node_config: NodeConfig, db_sessions) -> None:
    ingestor = Ingestor(node_config, db_sessions)
    study, series, sop = generate_uid(UID_ROOT), generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    first = _encode(study, series, 0, sop_uid=sop, patient_id="FIRST")
    second = _encode(study, series, 0, sop_uid=sop, patient_id="SECOND")
    assert first != second
    assert not ingestor.store(first, source="dimse", ae_title="PACS").duplicate
    assert ingestor.store(second, source="dimse", ae_title="PACS").duplicate
    rows = _rows(db_sessions)
    assert len(rows) == 1 and rows[0].sha256 == hashlib.sha256(first).hexdigest()
    files, staged = _spool_state(node_config.spool)
    assert [str(f) for f in files] == [rows[0].path] and staged == []
    assert files[0].read_bytes() == first
    with db_sessions() as s:
        assert s.scalar(select(Study.instance_count)) == 1
        assert s.scalar(select(Series.instance_count)) == 1
        stored = s.scalar(select(func.count(AuditEvent.id)).where(
            AuditEvent.event_type == "instance.stored"))
    assert stored == 1


def test_a_sop_uid_reused_under_another_study_leaves_no_empty_study(
        node_config: NodeConfig, db_sessions) -> None:
    ingestor = Ingestor(node_config, db_sessions)
    sop = generate_uid(UID_ROOT)
    ingestor.store(_encode(generate_uid(UID_ROOT), generate_uid(UID_ROOT), 0, sop_uid=sop),
                   source="dimse")
    other = _encode(generate_uid(UID_ROOT), generate_uid(UID_ROOT), 0, sop_uid=sop)
    assert ingestor.store(other, source="dimse").duplicate
    with db_sessions() as s:
        assert s.scalar(select(func.count(Study.id))) == 1
        assert s.scalar(select(func.count(Series.id))) == 1
        firsts = s.scalar(select(func.count(AuditEvent.id)).where(
            AuditEvent.event_type == "study.first_instance"))
    assert firsts == 1 and len(_rows(db_sessions)) == 1
    assert _spool_state(node_config.spool)[1] == []


def test_late_instance_reopens_a_processed_study(node_config: NodeConfig, db_sessions) -> None:
    ingestor = Ingestor(node_config, db_sessions)
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    ingestor.store(_encode(study, series, 0), source="dimse", ae_title="PACS")
    with db_sessions() as s, s.begin():
        s.execute(update(Study).values(state="processed", reason="done"))
    ingestor.store(_encode(study, series, 1), source="dimse", ae_title="PACS", ip="10.0.0.9")
    with db_sessions() as s:
        row = s.scalars(select(Study)).one()
        reopened = list(s.scalars(select(AuditEvent).where(
            AuditEvent.event_type == "study.reopened")))
    assert (row.state, row.reason, row.instance_count) == ("receiving", None, 2)
    assert row.calling_ip == "10.0.0.9"
    assert len(reopened) == 1 and reopened[0].detail["previous_state"] == "processed"


def test_study_limit_refuses_without_a_trace_on_disk(node_config: NodeConfig,
                                                     db_sessions) -> None:
    ingestor = Ingestor(node_config.replace(max_instances_per_study=2), db_sessions)
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    for i in range(2):
        ingestor.store(_encode(study, series, i), source="dimse")
    with pytest.raises(IngestError) as refused:
        ingestor.store(_encode(study, series, 2), source="dimse")
    assert refused.value.status == OUT_OF_RESOURCES and "limit is 2" in refused.value.reason
    files, staged = _spool_state(node_config.spool)
    assert len(files) == 2 and staged == [] and len(_rows(db_sessions)) == 2


def test_cached_rows_that_vanished_are_recreated(node_config: NodeConfig, db_sessions) -> None:
    """An id cached by the ingestor whose row is gone must not make every later store fail."""
    ingestor = Ingestor(node_config, db_sessions)
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    ingestor.store(_encode(study, series, 0), source="dimse")
    with db_sessions() as s, s.begin():
        s.execute(delete(Instance))
        s.execute(delete(Series))
        s.execute(delete(Study))
    assert not ingestor.store(_encode(study, series, 1), source="dimse").duplicate
    with db_sessions() as s:
        assert s.scalar(select(Study.instance_count)) == 1
        assert s.scalar(select(Series.instance_count)) == 1


def test_result_objects_do_not_count_as_received(node_config: NodeConfig, db_sessions) -> None:
    ingestor = Ingestor(node_config, db_sessions)
    study = generate_uid(UID_ROOT)
    ingestor.store(_encode(study, generate_uid(UID_ROOT), 0), source="dimse")
    ingestor.store(_encode(study, generate_uid(UID_ROOT), 0), source="result")
    with db_sessions() as s:
        assert s.scalar(select(Study.instance_count)) == 1
        flags = sorted(s.scalars(select(Series.is_result)))
    assert flags == [False, True]


@pytest.fixture(params=["indexed before the answer", "spool first"])
def pg_ingestor(request: pytest.FixtureRequest, node_config: NodeConfig, own_pg_url: str):
    """An ingestor on PostgreSQL both ways the node runs one: indexing on the caller's thread
    (workers storing results, pull) and answering from the spool with a batch index writer
    (receivers). Tests call ``_indexed`` before reading rows."""
    engine = make_engine(own_pg_url)
    sessions = make_sessionmaker(engine)
    indexer = None
    if request.param == "spool first":
        indexer = Indexer(sessions, InstanceIndex(node_config.max_instances_per_study)).start()
    yield Ingestor(node_config.replace(database_url=own_pg_url), sessions, indexer), sessions
    if indexer is not None:
        indexer.stop()
    engine.dispose()


def _indexed(ingestor: Ingestor) -> None:
    if ingestor.indexer is not None:
        ingestor.indexer.flush()


def test_same_instance_from_many_senders_at_once(pg_ingestor, node_config: NodeConfig) -> None:
    ingestor, sessions = pg_ingestor
    study, series, sop = generate_uid(UID_ROOT), generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    copies = [_encode(study, series, 0, sop_uid=sop, patient_id=f"P{i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda d: ingestor.store(d, source="dimse"), copies))
    assert sum(not r.duplicate for r in results) == 1
    _indexed(ingestor)
    rows = _rows(sessions)
    files, staged = _spool_state(node_config.spool)
    assert len(rows) == 1 and len(files) == 1 and staged == []
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == rows[0].sha256


def test_one_new_study_from_many_senders_at_once(pg_ingestor) -> None:
    ingestor, sessions = pg_ingestor
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    data = [_encode(study, series, i) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda d: ingestor.store(d, source="dimse", ae_title="PACS"), data))
    _indexed(ingestor)
    with sessions() as s:
        assert s.scalar(select(func.count(Study.id))) == 1
        assert s.scalar(select(Study.instance_count)) == 16
        assert s.scalar(select(Series.instance_count)) == 16
        firsts = s.scalar(select(func.count(AuditEvent.id)).where(
            AuditEvent.event_type == "study.first_instance"))
    assert firsts == 1 and len(_rows(sessions)) == 16


def test_many_studies_from_many_senders_at_once(pg_ingestor) -> None:
    ingestor, sessions = pg_ingestor
    studies = [(generate_uid(UID_ROOT), generate_uid(UID_ROOT)) for _ in range(4)]
    data = [_encode(st, se, i) for st, se in studies for i in range(12)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda d: ingestor.store(d, source="dimse", ae_title="PACS"), data))
    _indexed(ingestor)
    with sessions() as s:
        assert sorted(s.scalars(select(Study.instance_count))) == [12] * 4
        assert sorted(s.scalars(select(Series.instance_count))) == [12] * 4
    assert len(_rows(sessions)) == 48
    with sessions() as s:
        events = dict(s.execute(select(AuditEvent.event_type, func.count(AuditEvent.id))
                                .group_by(AuditEvent.event_type)).all())
    assert events["instance.stored"] == 48 and events["study.first_instance"] == 4
