from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import redis
from nodekit import write_study
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from dicom_node.broker import Publisher
from dicom_node.config import NodeConfig
from dicom_node.db.models import AuditEvent, Job, OutboxMessage, Study, utcnow
from dicom_node.ingest import Ingestor
from dicom_node.outbox import relay
from dicom_node.reconcile import reconcile
from dicom_node.studies import close_due_studies


def _ingest(config, sessions, files, ae="PACS"):
    ingestor = Ingestor(config, sessions)
    for f in files:
        ingestor.store(f.read_bytes(), source="dimse", ae_title=ae, ip="127.0.0.1")


def _queue_a_study(tmp_path: Path, config: NodeConfig, sessions: sessionmaker) -> None:
    """A complete study received and closed, so it has a queued job and an outbox message:
    where the relay and the reconciler take over."""
    _, files = write_study(tmp_path / "s")
    _ingest(config, sessions, files)
    close_due_studies(sessions, config, utcnow() + timedelta(seconds=1))


def _study(sessions, uid):
    with sessions() as s:
        return s.scalar(select(Study).where(Study.study_instance_uid == uid))


def test_complete_study_closes_after_settle(tmp_path, node_config, db_sessions):
    sessions = db_sessions
    uid, files = write_study(tmp_path / "s")
    _ingest(node_config, sessions, files)
    assert close_due_studies(sessions, node_config, utcnow()) == []  # not quiet yet
    later = utcnow() + timedelta(seconds=1)
    assert close_due_studies(sessions, node_config, later) == [(uid, "close")]
    study = _study(sessions, uid)
    assert study.state == "queued" and study.reason.startswith("complete")
    with sessions() as s:
        job = s.scalar(select(Job))
        message = s.scalar(select(OutboxMessage))
    assert (job.state, message.task_name, message.payload) == (
        "queued", "lumbar.process_study", {"job_id": job.id})


def test_incomplete_study_waits_then_times_out(tmp_path, node_config, db_sessions):
    sessions = db_sessions
    uid, files = write_study(tmp_path / "s", roles=("sag_t2",))
    _ingest(node_config, sessions, files)
    assert close_due_studies(sessions, node_config, utcnow() + timedelta(seconds=1)) == [
        (uid, "wait")]
    # checked and unchanged: not looked at again until the timeout
    assert close_due_studies(sessions, node_config, utcnow() + timedelta(seconds=1.5)) == []
    assert close_due_studies(sessions, node_config, utcnow() + timedelta(seconds=3)) == [
        (uid, "close")]
    assert "missing sag_t1, ax_t2" in _study(sessions, uid).reason


def test_non_lumbar_and_non_mr_ignored_with_reason(tmp_path, node_config, db_sessions):
    sessions = db_sessions
    brain, files = write_study(tmp_path / "brain", body_part="BRAIN")
    _ingest(node_config, sessions, files)
    ct, ct_files = write_study(tmp_path / "ct", roles=("sag_t2",), n=2, modality="CT")
    _ingest(node_config, sessions, ct_files)
    result = dict(close_due_studies(sessions, node_config, utcnow() + timedelta(seconds=5)))
    assert result == {brain: "ignore", ct: "ignore"}
    assert "not a lumbar spine study" in _study(sessions, brain).reason
    assert _study(sessions, ct).reason == "not an MR study (modalities: CT)"
    with sessions() as s:
        assert s.scalar(select(Job)) is None
        ignored = list(s.scalars(select(AuditEvent).where(
            AuditEvent.event_type == "study.ignored")))
    assert len(ignored) == 2


def test_late_instances_rerun_and_supersede(tmp_path, node_config, db_sessions):
    sessions = db_sessions
    uid, files = write_study(tmp_path / "s", n=7)
    _ingest(node_config, sessions, files[:-1])
    close_due_studies(sessions, node_config, utcnow() + timedelta(seconds=1))
    _ingest(node_config, sessions, files[-1:])
    assert _study(sessions, uid).state == "receiving"
    close_due_studies(sessions, node_config, utcnow() + timedelta(seconds=1))
    with sessions() as s:
        first, second = s.scalars(select(Job).order_by(Job.id))
        events = [e.event_type for e in s.scalars(select(AuditEvent).where(
            AuditEvent.event_type.in_(("study.reopened", "job.superseded")))
            .order_by(AuditEvent.id))]
    assert first.superseded_by == second.id and second.superseded_by is None
    assert (first.instance_count, second.instance_count) == (20, 21)
    assert events == ["study.reopened", "job.superseded"]


def test_outbox_survives_broker_outage(tmp_path, node_config, sessions):
    _queue_a_study(tmp_path, node_config, sessions)
    prefix = f"lumbar-test-{secrets.token_hex(4)}:"
    down = Publisher(node_config.replace(broker_url="redis://127.0.0.1:1/0",
                                         broker_key_prefix=prefix))
    try:
        assert relay(sessions, down) == 0
    finally:
        down.close()
    with sessions() as s:
        message = s.scalar(select(OutboxMessage))
    assert message.dispatched_at is None and message.attempts == 1
    assert "Error" in message.last_error
    up = Publisher(node_config.replace(broker_url="redis://127.0.0.1:6379/0",
                                       broker_key_prefix=prefix))
    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    try:
        assert relay(sessions, up) == 1
        assert relay(sessions, up) == 0  # dispatched once
        assert client.llen(f"{prefix}gpu") == 1
    finally:
        up.close()
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    with sessions() as s:
        assert s.scalar(select(OutboxMessage)).dispatched_at is not None


def test_reconciler_requeues_stuck_job(tmp_path, node_config, db_sessions):
    sessions = db_sessions
    _queue_a_study(tmp_path, node_config, sessions)
    with sessions() as s, s.begin():
        job = s.scalar(select(Job))
        job.state, job.heartbeat_at = "running", utcnow() - timedelta(hours=2)
    assert reconcile(sessions, node_config) == {"jobs_requeued": 1, "deliveries_queued": 0,
                                                "deliveries_requeued": 0}
    with sessions() as s:
        assert s.scalar(select(Job)).state == "queued"
        assert len(list(s.scalars(select(OutboxMessage)))) == 2


def test_reconciler_republishes_job_the_broker_lost(tmp_path, node_config, db_sessions):
    sessions = db_sessions
    _queue_a_study(tmp_path, node_config, sessions)
    with sessions() as s, s.begin():
        s.scalar(select(OutboxMessage)).dispatched_at = utcnow()
    assert reconcile(sessions, node_config)["jobs_requeued"] == 0
    later = utcnow() + timedelta(seconds=node_config.job_stale_seconds + 1)
    assert reconcile(sessions, node_config, later)["jobs_requeued"] == 1
    assert reconcile(sessions, node_config, later)["jobs_requeued"] == 0  # once per stale period
    with sessions() as s:
        pending = list(s.scalars(select(OutboxMessage).where(
            OutboxMessage.dispatched_at.is_(None))))
    assert len(pending) == 1 and pending[0].task_name == "lumbar.process_study"
