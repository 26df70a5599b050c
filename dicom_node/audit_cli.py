"""`lumbar-node audit`: the audit trail for operators, as a table, JSON or CSV.

`lumbar-node audit --study UID` tells one study's story from its first instance to the
delivery of its results. The query itself is audited.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


def _time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", help="StudyInstanceUID")
    parser.add_argument("--patient-id")
    parser.add_argument("--ae-title")
    parser.add_argument("--event-type", help="e.g. association.rejected, delivery.sent")
    parser.add_argument("--since", type=_time, help="ISO time, e.g. 2026-01-31T08:00")
    parser.add_argument("--until", type=_time)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--database-url", help="overrides LUMBAR_NODE_DATABASE_URL")


def schema_missing(url: str) -> str | None:
    """One line saying what to run when the database is absent or not migrated, else None.

    Checked before connecting: SQLite would otherwise create an empty file, and a query on
    it would end in a traceback about a missing table.
    """
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from dicom_node.db.session import make_engine

    fix = ("run `.venv/bin/lumbar-node db upgrade` with the same LUMBAR_NODE_DATABASE_URL, or "
           "pass --database-url of the node's database (`lumbar-node demo` prints its own)")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).is_file():
            return f"no database at {parsed.database}: {fix}"
    engine = make_engine(url)
    try:
        if not inspect(engine).has_table("audit_events"):
            return f"database {parsed.render_as_string(hide_password=True)} has no audit " \
                   f"trail yet (not migrated): {fix}"
    except SQLAlchemyError as exc:
        return f"cannot open database {parsed.render_as_string(hide_password=True)}: " \
               f"{type(exc).__name__}"
    finally:
        engine.dispose()
    return None


@contextlib.contextmanager
def migrated_sessions(database_url: str | None) -> Iterator[sessionmaker[Session] | None]:
    """Sessions on ``database_url`` (else the configured database) for a command-line tool,
    or None once one line saying what to run has been printed: a missing or un-migrated
    database must never turn into a traceback or a new empty database file."""
    from dicom_node.config import load_config
    from dicom_node.db.session import make_engine, make_sessionmaker

    url = database_url or load_config().db_url
    missing = schema_missing(url)
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        yield None
        return
    engine = make_engine(url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> int:
    from dicom_node import audit
    from dicom_node.db.session import transaction

    with migrated_sessions(args.database_url) as sessions:
        if sessions is None:
            return 2
        with transaction(sessions) as session:
            rows = audit.as_dicts(audit.query(
                session, study_uid=args.study, patient_id=args.patient_id,
                ae_title=args.ae_title, event_type=args.event_type, since=args.since,
                until=args.until, limit=args.limit))
            filters = {k: str(v) for k, v in {
                "study": args.study, "patient_id": args.patient_id, "ae_title": args.ae_title,
                "event_type": args.event_type, "since": args.since, "until": args.until,
            }.items() if v}
            audit.record(session, "audit.queried", actor=f"cli:{getpass.getuser()}",
                         study_uid=args.study, filters=filters, rows=len(rows))
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        print(audit.to_csv(rows), end="")
    else:
        print(audit.to_table(rows))
        print(f"({len(rows)} events)")
    return 0
