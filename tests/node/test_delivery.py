"""Delivery over C-STORE (to dcmtk storescp) and STOW-RS (to a second node), with retries."""

from __future__ import annotations

import time
from datetime import timedelta

import pydicom
import pytest
from _harness import free_port
from nodekit import Storescp, write_study
from sqlalchemy import select

from dicom_node.config import parse_destinations
from dicom_node.db.models import AuditEvent, Delivery, Instance, Job, ResultObject, Study, utcnow
from dicom_node.db.session import transaction
from dicom_node.delivery.service import create_deliveries, deliver, resend_study
from dicom_node.ingest import Ingestor
from dicom_node.reconcile import reconcile
from dicom_node.serve import Node
from dicom_node.studies import close_due_studies


def _finished_job(tmp_path, config, sessions) -> tuple[str, int, int]:
    """A closed study whose job is done, with DICOM objects recorded as its results."""
    uid, files = write_study(tmp_path / "study", n=6)
    ingestor = Ingestor(config, sessions)
    for f in files:
        ingestor.store(f.read_bytes(), source="dimse", ae_title="PACS", ip="127.0.0.1")
    close_due_studies(sessions, config, utcnow() + timedelta(seconds=5))
    results = files[:3]
    with transaction(sessions) as s:
        job = s.scalar(select(Job))
        job.state, job.result_status = "done", "complete"
        for path in results:
            inst = s.scalar(select(Instance).where(Instance.sha256 == _sha(path)))
            s.add(ResultObject(job_id=job.id, kind="sr", sop_class_uid=inst.sop_class_uid,
                               sop_instance_uid=inst.sop_instance_uid, path=str(path),
                               sha256=inst.sha256))
    return uid, job.id, len(results)


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _create(sessions, config, job_id) -> list[int]:
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        return [d.id for d in create_deliveries(s, config, job, s.get(Study, job.study_id))]


def _events(sessions, uid) -> list[str]:
    with sessions() as s:
        return [e.event_type for e in s.scalars(select(AuditEvent).where(
            AuditEvent.study_instance_uid == uid).order_by(AuditEvent.id))]


def test_destination_down_retried_then_delivered(tmp_path, node_config, sessions):
    port = free_port()
    config = node_config.replace(destinations=parse_destinations(f"PACS@127.0.0.1:{port}"),
                                 delivery_backoff_seconds=0.2)
    uid, job_id, n = _finished_job(tmp_path, config, sessions)
    [delivery_id] = _create(sessions, config, job_id)
    assert deliver(sessions, config, delivery_id) == "pending"
    with sessions() as s:
        row = s.get(Delivery, delivery_id)
    assert row.attempts == 1 and "unreachable" in row.last_error
    assert reconcile(sessions, config)["deliveries_queued"] == 0  # not due yet
    pacs = Storescp(tmp_path / "pacs", port)
    try:
        time.sleep(0.3)
        assert reconcile(sessions, config)["deliveries_queued"] == 1
        assert deliver(sessions, config, delivery_id) == "delivered"
        assert deliver(sessions, config, delivery_id) == "delivered"  # idempotent
        assert len(pacs.files()) == n
    finally:
        pacs.stop()
    story = _events(sessions, uid)
    assert story.index("delivery.failed") < story.index("delivery.sent")


def test_dead_letter_then_resend(tmp_path, node_config, sessions):
    port = free_port()
    config = node_config.replace(destinations=parse_destinations(f"PACS@127.0.0.1:{port}"),
                                 delivery_backoff_seconds=0.0, delivery_max_attempts=2)
    uid, job_id, n = _finished_job(tmp_path, config, sessions)
    [delivery_id] = _create(sessions, config, job_id)
    assert deliver(sessions, config, delivery_id) == "pending"
    assert deliver(sessions, config, delivery_id) == "dead"
    assert "delivery.dead_lettered" in _events(sessions, uid)
    pacs = Storescp(tmp_path / "pacs", port)
    try:
        [again] = resend_study(sessions, config, uid)
        assert deliver(sessions, config, again) == "delivered"
        assert len(pacs.files()) == n
    finally:
        pacs.stop()
    with pytest.raises(ValueError, match="unknown study"):
        resend_study(sessions, config, "1.2.3.4")


def test_return_to_calling_ae_needs_a_port(tmp_path, node_config, sessions):
    uid, job_id, _ = _finished_job(tmp_path, node_config, sessions)
    assert _create(sessions, node_config, job_id) == []
    with sessions() as s:
        skipped = s.scalar(select(AuditEvent).where(AuditEvent.event_type == "delivery.skipped"))
    assert "RETURN_PORTS" in skipped.detail["reason"]
    config = node_config.replace(return_ports={"PACS": 4242})
    [delivery_id] = _create(sessions, config, job_id)
    with sessions() as s:
        assert s.get(Delivery, delivery_id).destination == "PACS@127.0.0.1:4242"


def test_stow_out_to_another_node(tmp_path, node_config, sessions):
    receiver_config = node_config.replace(data_dir=tmp_path / "receiver", http_port=free_port(),
                                          dimse_port=free_port(), api_token="receiver-token")
    from dicom_node.db import migrate

    migrate.upgrade(receiver_config.db_url)
    receiver = Node(receiver_config, scheduler=False)
    receiver.start()
    try:
        from nodekit import wait_port

        wait_port(receiver_config.http_port)
        url = f"http://127.0.0.1:{receiver_config.http_port}/dicomweb"
        config = node_config.replace(destinations=parse_destinations(url),
                                     destination_token="receiver-token")
        uid, job_id, n = _finished_job(tmp_path, config, sessions)
        [delivery_id] = _create(sessions, config, job_id)
        assert deliver(sessions, config, delivery_id) == "delivered"
        receiver.indexer.flush()  # the receiver answered from its spool; its index follows
        with receiver.sessions() as s:
            assert len(list(s.scalars(select(Instance).where(Instance.source == "stow")))) == n
        bad = node_config.replace(destinations=parse_destinations(url), destination_token="no")
        [failing] = _create(sessions, bad, job_id)
        assert deliver(sessions, bad, failing) == "pending"
        with sessions() as s:
            assert "401" in s.get(Delivery, failing).last_error
    finally:
        receiver.stop()


def test_compressed_result_decompressed_for_a_pacs_without_rle(tmp_path, node_config,
                                                               sessions):
    from pydicom.uid import RLELossless

    from dicom_node.delivery.senders import send_dimse

    _, files = write_study(tmp_path / "study", roles=("sag_t2",), n=2)
    ds = pydicom.dcmread(files[0])
    ds.compress(RLELossless, generate_instance_uid=False)
    rle = tmp_path / "rle.dcm"
    ds.save_as(rle, enforce_file_format=True)
    port = free_port()
    pacs = Storescp(tmp_path / "pacs", port)  # dcmtk storescp accepts no RLE by default
    try:
        assert send_dimse(node_config, parse_destinations(f"PACS@127.0.0.1:{port}")[0],
                          [rle, files[1]]) == 2
        received = {pydicom.dcmread(p).SOPInstanceUID: p for p in pacs.files()}
    finally:
        pacs.stop()
    got = pydicom.dcmread(received[ds.SOPInstanceUID])  # same UID: references stay valid
    assert got.file_meta.TransferSyntaxUID != RLELossless
    assert got.pixel_array.tobytes() == pydicom.dcmread(files[0]).pixel_array.tobytes()
