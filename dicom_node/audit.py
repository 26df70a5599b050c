"""Appending to, and reading, the audit trail.

There is deliberately no function here that updates or deletes an event.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from dicom_node.db.models import AuditEvent, utcnow

_INSERT = insert(AuditEvent.__table__)  # a statement, built once: compiled once per dialect
AUDIT_COLUMNS = ("id", "at", "event_type", "actor", "ae_title", "ip", "study_instance_uid",
                 "patient_id", "detail")


def record(session: Session, event_type: str, **fields: Any) -> AuditEvent:
    """Add one event to the caller's transaction, so it commits or rolls back with the work.

    ``fields``: see :func:`_row` (study_uid, patient_id, actor, ae_title, ip; the rest is
    the event's detail).
    """
    event = AuditEvent(**_row(event_type, **fields))
    session.add(event)
    return event


def append(conn: Connection, event_type: str, **fields: Any) -> None:
    """:func:`record` for Core code on the ingest hot path, which has no ORM unit of work."""
    conn.execute(_INSERT, {"at": utcnow(), **_row(event_type, **fields)})


def _row(
    event_type: str,
    *,
    study_uid: str | None = None,
    patient_id: str | None = None,
    actor: str | None = None,
    ae_title: str | None = None,
    ip: str | None = None,
    **detail: Any,
) -> dict[str, Any]:
    return {"event_type": event_type, "study_instance_uid": study_uid,
            "patient_id": patient_id, "actor": actor, "ae_title": ae_title, "ip": ip,
            "detail": detail or None}


def query(
    session: Session,
    *,
    study_uid: str | None = None,
    patient_id: str | None = None,
    ae_title: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> list[AuditEvent]:
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    stmt = select(AuditEvent).order_by(AuditEvent.at, AuditEvent.id).limit(limit)
    if study_uid:
        stmt = stmt.where(AuditEvent.study_instance_uid == study_uid)
    if patient_id:
        stmt = stmt.where(AuditEvent.patient_id == patient_id)
    if ae_title:
        stmt = stmt.where(AuditEvent.ae_title == ae_title)
    if event_type:
        stmt = stmt.where(AuditEvent.event_type == event_type)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at <= until)
    return list(session.scalars(stmt))


def as_dicts(events: Sequence[AuditEvent]) -> list[dict[str, Any]]:
    return [
        {
            "id": e.id,
            "at": e.at.isoformat() if e.at else None,
            "event_type": e.event_type,
            "actor": e.actor,
            "ae_title": e.ae_title,
            "ip": e.ip,
            "study_instance_uid": e.study_instance_uid,
            "patient_id": e.patient_id,
            "detail": e.detail,
        }
        for e in events
    ]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=AUDIT_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "detail": json.dumps(row["detail"]) if row["detail"] else ""})
    return buf.getvalue()


def to_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'time (UTC)':<26} {'event':<24} {'AE':<16} detail"]
    for row in rows:
        detail = json.dumps(row["detail"], sort_keys=True) if row["detail"] else ""
        lines.append(f"{row['at'][:26]:<26} {row['event_type']:<24} {row['ae_title'] or '':<16} "
                     f"{detail}")
    return "\n".join(lines)
