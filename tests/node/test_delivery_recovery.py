"""Deliveries a killed worker left in `sending` go back to the queue, once."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from _harness import free_port
from nodekit import Storescp
from sqlalchemy import select
from test_delivery import _create, _finished_job

from dicom_node.config import load_config, parse_destinations
from dicom_node.db.models import AuditEvent, Delivery, OutboxMessage, utcnow
from dicom_node.db.session import make_engine, make_sessionmaker
from dicom_node.delivery.service import SENDING_ELSEWHERE, deliver
from dicom_node.reconcile import reconcile
from dicom_node.tasks import DELIVER_RESULTS


def _sending(sessions, delivery_id: int, seconds_ago: float) -> None:
    """The row as a worker leaves it when it is killed in the middle of the send."""
    with sessions() as s, s.begin():
        row = s.get(Delivery, delivery_id)
        row.status, row.attempts = "sending", row.attempts + 1
        row.sending_since = utcnow() - timedelta(seconds=seconds_ago)


def _messages(sessions, delivery_id: int) -> int:
    with sessions() as s:
        return sum(m.payload == {"delivery_id": delivery_id} for m in s.scalars(
            select(OutboxMessage).where(OutboxMessage.task_name == DELIVER_RESULTS)))


def _requeued_events(sessions) -> list[AuditEvent]:
    with sessions() as s:
        return list(s.scalars(select(AuditEvent).where(
            AuditEvent.event_type == "delivery.requeued")))


def test_lost_send_requeued_once_and_a_live_one_left_alone(tmp_path, node_config,
                                                           db_sessions):
    sessions = db_sessions
    port, other = free_port(), free_port()
    config = node_config.replace(destinations=parse_destinations(
        f"PACS@127.0.0.1:{port},OTHER@127.0.0.1:{other}"))
    uid, job_id, n = _finished_job(tmp_path, config, sessions)
    lost, live = _create(sessions, config, job_id)
    _sending(sessions, lost, config.delivery_stale_seconds + 60)
    _sending(sessions, live, 10)
    assert reconcile(sessions, config)["deliveries_requeued"] == 1
    assert reconcile(sessions, config)["deliveries_requeued"] == 0  # once
    with sessions() as s:
        lost_row, live_row = s.get(Delivery, lost), s.get(Delivery, live)
    assert (lost_row.status, lost_row.sending_since) == ("queued", None)
    assert "worker was lost" in lost_row.last_error
    assert live_row.status == "sending" and live_row.sending_since is not None
    assert (_messages(sessions, lost), _messages(sessions, live)) == (2, 1)
    [event] = _requeued_events(sessions)
    assert event.study_instance_uid == uid
    assert (event.detail["delivery_id"], event.detail["destination"]) == (
        lost, f"PACS@127.0.0.1:{port}")
    # the live send is not started a second time; the requeued one is sent normally
    assert deliver(sessions, config, live) == SENDING_ELSEWHERE
    pacs = Storescp(tmp_path / "pacs", port)
    try:
        assert deliver(sessions, config, lost) == "delivered"
        assert len(pacs.files()) == n
    finally:
        pacs.stop()
    with sessions() as s:
        row = s.get(Delivery, lost)
    assert (row.attempts, row.sending_since) == (2, None)


def test_two_reconcilers_requeue_a_lost_send_once(tmp_path, node_config, own_pg_url):
    config = node_config.replace(database_url=own_pg_url,
                                 destinations=parse_destinations("PACS@127.0.0.1:1"))
    engine = make_engine(own_pg_url)
    try:
        sessions = make_sessionmaker(engine)
        _, job_id, _ = _finished_job(tmp_path, config, sessions)
        [delivery_id] = _create(sessions, config, job_id)
        _sending(sessions, delivery_id, config.delivery_stale_seconds * 2)
        start = threading.Barrier(2)
        counts: list[dict[str, int]] = []

        def reconciler() -> None:
            start.wait()
            counts.append(reconcile(sessions, config))

        threads = [threading.Thread(target=reconciler) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(c["deliveries_requeued"] for c in counts) == [0, 1]
        assert _messages(sessions, delivery_id) == 2  # the original one and one requeue
        assert len(_requeued_events(sessions)) == 1
        with sessions() as s:
            assert Counter(s.scalars(select(Delivery.status))) == {"queued": 1}
    finally:
        engine.dispose()


def test_stale_limit_must_exceed_the_delivery_time_limit():
    assert load_config(env={}).delivery_stale_seconds == 900
    with pytest.raises(ValueError, match="DELIVERY_STALE_SECONDS"):
        load_config(env={"LUMBAR_NODE_DELIVERY_STALE_SECONDS": "120"})
