"""Re-queue work the queue lost: jobs stuck in `running` past their deadline (a worker died
after the broker redelivery window), deliveries stuck in `sending` past
DELIVERY_STALE_SECONDS (a worker killed mid-send) and deliveries whose retry time has come.

Runs in `serve` and as a periodic Celery task; with several of either on PostgreSQL the
`FOR UPDATE SKIP LOCKED` select makes each row go to exactly one of them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit, outbox
from dicom_node.config import NodeConfig
from dicom_node.db.models import Delivery, Job, Study, utcnow
from dicom_node.db.session import for_update
from dicom_node.delivery.service import send_outlived
from dicom_node.tasks import DELIVER_RESULTS, PROCESS_STUDY

log = logging.getLogger(__name__)


def _locked(session: Session, stmt: Select) -> Select:
    return for_update(session, stmt, skip_locked=True)


def heartbeat_lost(config: NodeConfig, now: datetime) -> ColumnElement[bool]:
    """A job `running` without a heartbeat for JOB_STALE_SECONDS: its worker is gone. The
    reconciler re-queues such a job, and a worker's claim may take it over."""
    stale = now - timedelta(seconds=config.job_stale_seconds)
    return and_(Job.state == "running",
                or_(Job.heartbeat_at < stale, Job.heartbeat_at.is_(None)))


def reconcile(sessions: sessionmaker[Session], config: NodeConfig,
              now: datetime | None = None) -> dict[str, int]:
    now = now or utcnow()
    stale = now - timedelta(seconds=config.job_stale_seconds)
    counts = {"jobs_requeued": 0, "deliveries_queued": 0, "deliveries_requeued": 0}
    with sessions() as session, session.begin():
        stuck = session.scalars(_locked(session, select(Job).where(
            Job.superseded_by.is_(None), heartbeat_lost(config, now))))
        for job in stuck:
            job.state, job.heartbeat_at = "queued", now
            outbox.enqueue(session, PROCESS_STUDY, job_id=job.id)
            study = session.get(Study, job.study_id)
            audit.record(session, "job.requeued", study_uid=study.study_instance_uid if study
                         else None, actor="reconciler", job_id=job.id,
                         reason=f"running without heartbeat since before {stale.isoformat()}")
            counts["jobs_requeued"] += 1
        # queued long ago, never started: the broker lost the message (e.g. a Redis restart
        # without persistence); the outbox row was dispatched, so publish it again
        lost = session.scalars(_locked(session, select(Job).where(
            Job.state == "queued", Job.superseded_by.is_(None),
            func.coalesce(Job.heartbeat_at, Job.created_at) < stale)))
        for job in lost:
            job.heartbeat_at = now
            outbox.enqueue(session, PROCESS_STUDY, job_id=job.id)
            counts["jobs_requeued"] += 1
        counts["deliveries_requeued"] = _lost_sends(session, config, now)
        due = session.scalars(_locked(session, select(Delivery).where(
            Delivery.status == "pending", Delivery.next_attempt_at <= now)))
        for delivery in due:
            delivery.status = "queued"
            outbox.enqueue(session, DELIVER_RESULTS, delivery_id=delivery.id)
            counts["deliveries_queued"] += 1
    if any(counts.values()):
        log.info("reconciler: %s", counts)
    return counts


def _lost_sends(session: Session, config: NodeConfig, now: datetime) -> int:
    """Deliveries whose send outlived any worker's time limit: the worker is gone, and only
    a broker redelivery (an hour on) would have tried again."""
    lost = session.scalars(_locked(session, select(Delivery).where(
        send_outlived(config, now))))
    count = 0
    for delivery in lost:
        since = delivery.sending_since or delivery.created_at
        reason = f"sending since {since.isoformat()} without an outcome; the worker was lost"
        delivery.status, delivery.sending_since, delivery.last_error = "queued", None, reason
        outbox.enqueue(session, DELIVER_RESULTS, delivery_id=delivery.id)
        job = session.get(Job, delivery.job_id)
        study = session.get(Study, job.study_id) if job else None
        audit.record(session, "delivery.requeued", study_uid=study.study_instance_uid if study
                     else None, patient_id=study.patient_id if study else None,
                     actor="reconciler", delivery_id=delivery.id,
                     destination=delivery.destination, attempt=delivery.attempts, reason=reason)
        count += 1
    return count
