"""Spool first, index in batches: the rules of ingest hold when the index follows the answer.

Each case sends through an Ingestor with an Indexer (as serve's receivers do), waits for the
writer with ``flush()`` and checks rows and files together: one row and one file per SOP
instance, one ``instance.stored`` audit row each, nothing staged left behind.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import httpx
import pydicom
import pytest
from load import UID_ROOT
from nodekit import wait_port, write_study
from pydicom.uid import generate_uid
from sqlalchemy import func, select, update
from test_ingest_index import _encode, _rows, _spool_state

from dicom_node.config import NodeConfig
from dicom_node.db.models import AuditEvent, Series, Study
from dicom_node.dimse.part10 import part10
from dicom_node.http.multipart import build
from dicom_node.indexer import Indexer
from dicom_node.ingest import OUT_OF_RESOURCES, IngestError, Ingestor
from dicom_node.instance_index import InstanceIndex
from dicom_node.serve import Node
from dicom_node.sweep import Sweeper


@pytest.fixture()
def spool_first(node_config: NodeConfig, db_sessions):
    indexer = Indexer(db_sessions, InstanceIndex(node_config.max_instances_per_study)).start()
    yield Ingestor(node_config, db_sessions, indexer), db_sessions
    indexer.stop()


def _count(sessions, what, *where) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count(what)).where(*where)) or 0)


def test_acknowledged_then_indexed_once_with_its_audit_row(spool_first, node_config) -> None:
    ingestor, sessions = spool_first
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    data = [_encode(study, series, i) for i in range(5)]
    results = [ingestor.store(d, source="dimse", ae_title="PACS", ip="10.0.0.1") for d in data]
    # the answer came from the spool: every file is in place before the index is asked
    assert len(_spool_state(node_config.spool)[0]) == 5
    assert [r.duplicate for r in results] == [False] * 5
    again = ingestor.store(data[0], source="dimse", ae_title="PACS")
    assert again.duplicate
    ingestor.indexer.flush()
    rows = _rows(sessions)
    files, staged = _spool_state(node_config.spool)
    assert len(rows) == 5 and sorted(r.path for r in rows) == [str(f) for f in files]
    assert staged == []
    assert {r.sha256 for r in rows} == {hashlib.sha256(d).hexdigest() for d in data}
    with sessions() as s:
        assert s.scalar(select(Study.instance_count)) == 5
        assert s.scalar(select(Series.instance_count)) == 5
        assert s.scalar(select(Study.calling_ae)) == "PACS"
    assert _count(sessions, AuditEvent.id, AuditEvent.event_type == "instance.stored") == 5


def test_reused_sop_uid_under_another_study_keeps_the_first(spool_first, node_config) -> None:
    ingestor, sessions = spool_first
    sop = generate_uid(UID_ROOT)
    first = _encode(generate_uid(UID_ROOT), generate_uid(UID_ROOT), 0, sop_uid=sop)
    ingestor.store(first, source="dimse")
    ingestor.indexer.flush()
    ingestor.store(_encode(generate_uid(UID_ROOT), generate_uid(UID_ROOT), 0, sop_uid=sop),
                   source="dimse")
    ingestor.indexer.flush()
    files, staged = _spool_state(node_config.spool)
    rows = _rows(sessions)
    assert len(rows) == 1 and [str(f) for f in files] == [rows[0].path] and staged == []
    assert files[0].read_bytes() == first
    assert _count(sessions, Study.id) == 1 and _count(sessions, Series.id) == 1


def test_late_instance_reopens_a_processed_study(spool_first) -> None:
    ingestor, sessions = spool_first
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    ingestor.store(_encode(study, series, 0), source="dimse", ae_title="PACS")
    ingestor.indexer.flush()
    with sessions() as s, s.begin():
        s.execute(update(Study).values(state="processed", reason="done"))
    ingestor.store(_encode(study, series, 1), source="dimse", ae_title="PACS")
    ingestor.indexer.flush()
    with sessions() as s:
        row = s.scalars(select(Study)).one()
    assert (row.state, row.instance_count) == ("receiving", 2)
    assert _count(sessions, AuditEvent.id, AuditEvent.event_type == "study.reopened") == 1


def test_study_limit_is_checked_before_the_answer(spool_first, node_config) -> None:
    ingestor, sessions = spool_first
    ingestor.config = node_config.replace(max_instances_per_study=2)
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    for i in range(2):
        ingestor.store(_encode(study, series, i), source="dimse")
    with pytest.raises(IngestError) as refused:
        ingestor.store(_encode(study, series, 2), source="dimse")
    assert refused.value.status == OUT_OF_RESOURCES and "limit is 2" in refused.value.reason
    ingestor.indexer.flush()
    files, staged = _spool_state(node_config.spool)
    assert len(files) == 2 and staged == [] and len(_rows(sessions)) == 2


def test_disk_floor_refuses_and_writes_nothing(spool_first, node_config) -> None:
    ingestor, sessions = spool_first
    ingestor.config = node_config.replace(spool_min_free_bytes=2**62)
    with pytest.raises(IngestError) as refused:
        ingestor.store(_encode(generate_uid(UID_ROOT), generate_uid(UID_ROOT), 0),
                       source="dimse")
    assert refused.value.status == OUT_OF_RESOURCES and "disk" in refused.value.reason
    assert _spool_state(node_config.spool) == ([], [])


def test_sweep_indexes_spooled_files_without_a_row(node_config, db_sessions) -> None:
    """What a receiver killed between answer and index leaves: files and no rows (here an
    indexer that never runs)."""
    sessions = db_sessions
    never = Ingestor(node_config, sessions, Indexer(sessions, InstanceIndex(5000)))
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    for i in range(3):
        data = _encode(study, series, i)
        if i < 2:  # as the SCP spools a C-STORE: the calling AE in the file meta
            meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
            body = data[144 + int.from_bytes(data[140:144], "little"):]
            data = part10(body, sop_class_uid=meta.MediaStorageSOPClassUID,
                          sop_instance_uid=meta.MediaStorageSOPInstanceUID,
                          transfer_syntax_uid=meta.TransferSyntaxUID, source_ae="PACS")
        never.store(data, source="dimse", ae_title="PACS")
    assert _rows(sessions) == [] and never.indexer.backlog == 3
    sweeper = Sweeper(node_config.spool, sessions, InstanceIndex(5000))
    assert sweeper.sweep() == 3
    assert sweeper.sweep() == 0  # the periodic pass looks only at new, settled files
    assert Sweeper(node_config.spool, sessions, InstanceIndex(5000)).sweep() == 0
    rows = _rows(sessions)
    assert sorted(r.source for r in rows) == ["dimse", "dimse", "stow"]
    with sessions() as s:
        assert s.scalar(select(Study.instance_count)) == 3
        assert s.scalar(select(Study.calling_ae)) == "PACS"
    assert _count(sessions, AuditEvent.id, AuditEvent.event_type == "instance.stored") == 3


def test_stow_past_the_spool_bound_is_503_and_writes_nothing(node_config: NodeConfig,
                                                             tmp_path: Path) -> None:
    node = Node(node_config.replace(spool_max_pending_bytes=0), scheduler=False)
    node.start()
    try:
        wait_port(node_config.http_port)
        _, files = write_study(tmp_path / "study", n=2, roles=("sag_t2",))
        body, ctype = build([f.read_bytes() for f in files], "application/dicom")
        answer = httpx.post(f"http://127.0.0.1:{node_config.http_port}/dicomweb/studies",
                            content=body, headers={"Content-Type": ctype,
                                                   "Authorization": "Bearer secret-token"})
    finally:
        node.stop()
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    reasons = [item["00081197"]["Value"][0] for item in answer.json()["00081198"]["Value"]]
    assert reasons == [0xA700, 0xA700]
    assert _spool_state(node_config.spool) == ([], [])
