"""Transactional outbox: a task is queued by a row written in the same transaction as the
job or delivery it is about, and a relay publishes the rows afterwards.

If the broker is down the rows stay undispatched and the next relay pass sends them, so a
broker outage delays work but loses none. Publishing is at-least-once; tasks re-read their
row and skip work already done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import OutboxMessage, utcnow
from dicom_node.db.session import for_update
from dicom_node.tasks import QUEUE_OF

log = logging.getLogger(__name__)

Publish = Callable[[str, str, dict[str, Any]], None]


def enqueue(session: Session, task_name: str, **payload: Any) -> OutboxMessage:
    if task_name not in QUEUE_OF:
        raise ValueError(f"unknown task {task_name!r}; expected one of {sorted(QUEUE_OF)}")
    message = OutboxMessage(task_name=task_name, queue=QUEUE_OF[task_name], payload=payload)
    session.add(message)
    return message


def pending_count(session: Session) -> int:
    from sqlalchemy import func

    return int(session.scalar(select(func.count(OutboxMessage.id))
                              .where(OutboxMessage.dispatched_at.is_(None))) or 0)


def relay(sessions: sessionmaker[Session], publish: Publish, batch: int = 100) -> int:
    """Publish undispatched rows in order; stop at the first failure (the broker is likely
    down) and leave the rest for the next pass. Returns how many were published."""
    published = 0
    with sessions() as session, session.begin():
        stmt = (select(OutboxMessage).where(OutboxMessage.dispatched_at.is_(None))
                .order_by(OutboxMessage.id).limit(batch))
        for message in session.scalars(for_update(session, stmt, skip_locked=True)):
            try:
                publish(message.task_name, message.queue, dict(message.payload))
            except Exception as exc:  # any broker error: keep the row, try again later
                message.attempts += 1
                message.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                log.warning("outbox relay: publishing %s failed: %s", message.task_name, exc)
                break
            message.dispatched_at = utcnow()
            message.attempts += 1
            published += 1
    return published
