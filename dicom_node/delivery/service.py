"""Delivery rows through their life: create, send, retry with capped backoff, dead-letter.

A failed attempt puts the row back to `pending` with `next_attempt_at`; the reconciler
queues it again when that time comes. After DELIVERY_MAX_ATTEMPTS the row is `dead` and
shows in the admin API and `lumbar-node audit` until someone runs `lumbar-node resend`.

Sending starts with one conditional UPDATE (the claim), so two messages for one row (a
broker redelivery and a reconciler re-queue) do not both send; the attempt number it sets
fences the outcome, so a send that outlived its claim does not overwrite a newer one.

A row names its destination by the redacted label (no `user:password@`); the send looks
that label up among the destinations the configuration gives the study now, so credentials
live only in the configuration. A label no longer there dead-letters the row at once with
the reason: retrying cannot help until the configuration changes, and then `resend` does.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit, outbox
from dicom_node.config import Destination, NodeConfig
from dicom_node.db.models import Delivery, Job, ResultObject, Study, utcnow
from dicom_node.db.session import for_update
from dicom_node.delivery.senders import DeliveryError, send_dimse, send_stow
from dicom_node.tasks import DELIVER_RESULTS

log = logging.getLogger(__name__)
#: what deliver returns when another worker is sending the row right now
SENDING_ELSEWHERE = "sending-elsewhere"


def destinations_for(config: NodeConfig, study: Study) -> tuple[list[Destination], str | None]:
    """Configured destinations, else the calling AE at its RETURN_PORTS port."""
    if config.destinations:
        return list(config.destinations), None
    ae = (study.calling_ae or "").strip()
    if ae and ae in config.return_ports and study.calling_ip:
        return [Destination("dimse", ae, study.calling_ip, config.return_ports[ae])], None
    return [], (f"no DESTINATIONS configured and no RETURN_PORTS entry for calling AE "
                f"{ae or '(unknown)'}")


def configured_destination(config: NodeConfig, study: Study, label: str) -> Destination | None:
    """The destination a delivery row's label names, as currently configured."""
    return next((d for d in destinations_for(config, study)[0] if d.label == label), None)


def create_deliveries(session: Session, config: NodeConfig, job: Job, study: Study) -> list[
        Delivery]:
    """Delivery rows + their outbox rows, inside the caller's transaction."""
    dests, why_none = destinations_for(config, study)
    if why_none:
        audit.record(session, "delivery.skipped", study_uid=study.study_instance_uid,
                     patient_id=study.patient_id, actor="worker", job_id=job.id, reason=why_none)
    rows = []
    for dest in dests:
        delivery = Delivery(job_id=job.id, destination=dest.label, status="queued")
        session.add(delivery)
        session.flush()
        outbox.enqueue(session, DELIVER_RESULTS, delivery_id=delivery.id)
        rows.append(delivery)
    return rows


def backoff_seconds(config: NodeConfig, attempts: int) -> float:
    return min(config.delivery_backoff_cap_seconds,
               config.delivery_backoff_seconds * 2 ** max(0, attempts - 1))


def send_outlived(config: NodeConfig, now: datetime) -> ColumnElement[bool]:
    """A row in `sending` for longer than DELIVERY_STALE_SECONDS: its worker is gone. The
    claim may take such a row over, and the reconciler re-queues it."""
    stale = now - timedelta(seconds=config.delivery_stale_seconds)
    return and_(Delivery.status == "sending",
                func.coalesce(Delivery.sending_since, Delivery.created_at) < stale)


def _claim(session: Session, config: NodeConfig, delivery_id: int) -> bool:
    """Take the row if it waits to be sent, or if its send outlived DELIVERY_STALE_SECONDS."""
    now = utcnow()
    result = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id,
               or_(Delivery.status.in_(("queued", "pending")), send_outlived(config, now)))
        .values(status="sending", attempts=Delivery.attempts + 1, sending_since=now)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def deliver(sessions: sessionmaker[Session], config: NodeConfig, delivery_id: int) -> str:
    """Send one delivery; idempotent (a delivered or dead row is left alone)."""
    with sessions() as session, session.begin():
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            raise ValueError(f"no delivery with id {delivery_id}")
        if delivery.status in ("delivered", "dead", "cancelled"):
            return delivery.status
        claimed = _claim(session, config, delivery_id)
        session.refresh(delivery)
        if not claimed:
            return SENDING_ELSEWHERE if delivery.status == "sending" else delivery.status
        job = session.get(Job, delivery.job_id)
        study = session.get(Study, job.study_id)
        study_uid, patient_id = study.study_instance_uid, study.patient_id
        attempts, label = delivery.attempts, delivery.destination
        dest = configured_destination(config, study, label)
        files = [Path(p) for p in session.scalars(select(ResultObject.path).where(
            ResultObject.job_id == job.id, ResultObject.sop_instance_uid.is_not(None))
            .order_by(ResultObject.id))]
    error: str | None = None
    final = dest is None
    sent = 0
    try:
        if dest is None:
            raise DeliveryError(f"destination {label} is no longer configured (DESTINATIONS or "
                                f"RETURN_PORTS); fix the configuration and resend the study")
        if not files:
            raise DeliveryError("job produced no DICOM result objects")
        sent = (send_stow if dest.kind == "dicomweb" else send_dimse)(config, dest, files)
    except (DeliveryError, OSError, ValueError) as exc:
        error = _without_credentials(str(exc), dest)
    now = utcnow()
    with sessions() as session, session.begin():
        delivery = _owned(session, delivery_id, attempts)
        if delivery is None:  # re-queued as lost while this send ran; the newer claim decides
            log.warning("delivery %s attempt %d outlived its claim (%s); outcome not recorded",
                        delivery_id, attempts, "sent" if error is None else error)
            return SENDING_ELSEWHERE
        delivery.sending_since = None
        if error is None:
            delivery.status, delivery.delivered_at, delivery.last_error = "delivered", now, None
            audit.record(session, "delivery.sent", study_uid=study_uid, patient_id=patient_id,
                         actor="worker", delivery_id=delivery_id, destination=label,
                         objects=sent, attempt=attempts)
            log.info("delivered %d objects to %s", sent, label)
        elif final or attempts >= config.delivery_max_attempts:
            delivery.status, delivery.dead_lettered_at, delivery.last_error = "dead", now, error
            audit.record(session, "delivery.dead_lettered", study_uid=study_uid,
                         patient_id=patient_id, actor="worker", delivery_id=delivery_id,
                         destination=label, attempts=attempts, error=error)
            log.error("delivery %s to %s dead-lettered: %s", delivery_id, label, error)
        else:
            wait = backoff_seconds(config, attempts)
            delivery.status, delivery.last_error = "pending", error
            delivery.next_attempt_at = now + timedelta(seconds=wait)
            audit.record(session, "delivery.failed", study_uid=study_uid, patient_id=patient_id,
                         actor="worker", delivery_id=delivery_id, destination=label,
                         attempt=attempts, error=error, retry_in_s=wait)
            log.warning("delivery %s to %s failed (attempt %d), retry in %.0f s: %s",
                        delivery_id, label, attempts, wait, error)
        return delivery.status


def _without_credentials(text: str, dest: Destination | None) -> str:
    """Error text as it may be stored: a library quoting the URL or password is not trusted."""
    auth = dest.basic_auth if dest is not None else None
    if dest is None or auth is None:
        return text
    text = text.replace(dest.url, dest.label)
    return text.replace(auth[1], "***") if auth[1] else text


def _owned(session: Session, delivery_id: int, attempt: int) -> Delivery | None:
    """The row, locked until commit, if claim `attempt` is still the one sending it."""
    stmt = select(Delivery).where(Delivery.id == delivery_id, Delivery.status == "sending",
                                  Delivery.attempts == attempt)
    return session.scalar(for_update(session, stmt).execution_options(populate_existing=True))


def resend_study(sessions: sessionmaker[Session], config: NodeConfig, study_uid: str,
                 actor: str = "admin") -> list[int]:
    """New deliveries of the latest finished job of a study, to the current destinations."""
    with sessions() as session, session.begin():
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        if study is None:
            raise ValueError(f"unknown study {study_uid!r}")
        job = session.scalar(select(Job).where(Job.study_id == study.id, Job.state == "done",
                                               Job.superseded_by.is_(None))
                             .order_by(Job.id.desc()))
        if job is None:
            raise ValueError(f"study {study_uid} has no finished analysis to resend")
        rows = create_deliveries(session, config, job, study)
        audit.record(session, "delivery.resend_requested", study_uid=study_uid,
                     patient_id=study.patient_id, actor=actor, job_id=job.id,
                     deliveries=[r.id for r in rows])
        return [r.id for r in rows]
