"""Engines and sessions built from a URL on demand: no connection exists at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import AuditEvent


def make_engine(url: str, **kwargs: Any) -> Engine:
    """SQLite gets WAL and a busy timeout so the SCP, HTTP and worker processes can share it."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def for_update(bind: Session | Connection, stmt: Select, *, skip_locked: bool = False) -> Select:
    """``stmt`` taking row locks where the database has them (PostgreSQL); SQLite has a
    single writer, so its transactions are serialised without them."""
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    if engine.dialect.name != "postgresql":
        return stmt
    return stmt.with_for_update(skip_locked=skip_locked)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


@event.listens_for(Session, "before_flush")
def _audit_is_append_only(session: Session, _ctx: Any, _instances: Any) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditEvent) and (obj in session.deleted or session.is_modified(obj)):
            raise PermissionError("audit_events is append-only: updates and deletes are refused")
