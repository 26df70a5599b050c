"""Alembic environment.

On PostgreSQL every migration runs with a short lock_timeout and a statement_timeout so a
schema change waiting behind a long transaction fails fast instead of blocking the SCP.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from dicom_node.config import load_config
from dicom_node.db.models import Base
from dicom_node.db.session import make_engine

target_metadata = Base.metadata
LOCK_TIMEOUT = "5s"
STATEMENT_TIMEOUT = "300s"


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    return url or load_config().db_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT}'"))
        connection.execute(text(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
        connection.commit()
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
