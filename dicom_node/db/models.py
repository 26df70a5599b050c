"""Tables of the node: what arrived, what was done with it, and who asked.

Timestamps are timezone-aware UTC. Job and delivery rows carry their own state machines
so tasks can be retried and re-dispatched without side effects: a task re-reads its row
and does nothing if the row says the work is done.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    modalities: Mapped[str | None] = mapped_column(String(64))
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    calling_ip: Mapped[str | None] = mapped_column(String(64))
    # receiving -> queued -> processed | ignored ; back to receiving on late instances
    state: Mapped[str] = mapped_column(String(16), default="receiving")
    reason: Mapped[str | None] = mapped_column(Text)
    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    closed_at: Mapped[datetime | None]
    #: when completeness was last evaluated; a study is looked at again only after new
    #: instances arrive or its timeout passes, not on every scheduler tick
    checked_at: Mapped[datetime | None]
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(String(64))
    series_number: Mapped[int | None]
    is_result: Mapped[bool] = mapped_column(Boolean, default=False)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    study: Mapped[Study] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None]
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(16))  # dimse | stow | result


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    # queued -> running -> done | failed ; superseded when a later job replaces it
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(128))
    result_status: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    stage_timings: Mapped[dict[str, Any] | None]
    model_versions: Mapped[dict[str, Any] | None]
    output_dir: Mapped[str | None] = mapped_column(Text)
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))


class Finding(Base):
    __tablename__ = "findings"
    __table_args__ = (UniqueConstraint("job_id", "level", "condition", "side"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    level: Mapped[str] = mapped_column(String(8))
    condition: Mapped[str] = mapped_column(String(40))
    side: Mapped[str | None] = mapped_column(String(8))
    grade: Mapped[str | None] = mapped_column(String(16))
    p_normal_mild: Mapped[float | None] = mapped_column(Float)
    p_moderate: Mapped[float | None] = mapped_column(Float)
    p_severe: Mapped[float | None] = mapped_column(Float)
    grader: Mapped[str | None] = mapped_column(String(16))
    assessable: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str | None] = mapped_column(Text)


class ResultObject(Base):
    __tablename__ = "result_objects"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # sr | seg | keyimage | ko | findings | overlay
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))


class Delivery(Base):
    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    destination: Mapped[str] = mapped_column(Text)
    # pending -> sending -> delivered | dead ; retries go back to pending with next_attempt_at
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: set while `sending`: a worker killed mid-send leaves it behind, and the reconciler
    #: re-queues the row once it is older than DELIVERY_STALE_SECONDS
    sending_since: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    delivered_at: Mapped[datetime | None]
    dead_lettered_at: Mapped[datetime | None]


class OutboxMessage(Base):
    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_name: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_outbox_pending", "dispatched_at", "id"),)


class AuditEvent(Base):
    """Append-only: the code has no update or delete path, PostgreSQL rejects both."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(String(128))
    ae_title: Mapped[str | None] = mapped_column(String(16), index=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(48), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[dict[str, Any] | None]


class User(Base):
    """A person who signs in to the review console; the password is an argon2 hash."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # radiologist | admin
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: consecutive failed sign-ins; reset by a successful one
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]


class UserSession(Base):
    """A signed-in browser. Only the SHA-256 of the cookie value is stored, so a copy of the
    database does not hand out live sessions."""

    __tablename__ = "user_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None]


class Review(Base):
    """A radiologist's verdict on one finding of one analysis. Append-only (database
    triggers refuse UPDATE and DELETE): a change of mind is a new row, the latest counts."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    #: `condition_level[_side]` as the RSNA columns (`left_neural_foraminal_narrowing_l4_l5`)
    #: or `disc_<finding>_<level>` for a disc finding
    finding_key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # stenosis | disc
    model_version: Mapped[str | None] = mapped_column(String(128))
    node_value: Mapped[str | None] = mapped_column(String(32))
    verdict: Mapped[str] = mapped_column(String(8))  # confirm | correct
    #: the radiologist's grade (`Normal/Mild`, `Moderate`, `Severe`) or `present`/`absent`
    corrected_value: Mapped[str | None] = mapped_column(String(32))
    comment: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ReportVersion(Base):
    """A corrected SR asked for from the console: built by a worker, delivered as a new
    version whose Predecessor Documents Sequence names the SR it supersedes."""

    __tablename__ = "report_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    #: the analysis whose findings are corrected
    analysis_job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    #: the job row that holds the corrected objects and their deliveries, once built
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    supersedes_sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    # queued -> built | failed
    state: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    built_at: Mapped[datetime | None]
