"""`lumbar-node resend --study UID`: deliver a study's latest results again.

For dead-lettered deliveries once the destination is fixed, or when a PACS lost them.
The new deliveries go through the outbox like any other, so `serve` or a beat worker
must be running to send them.
"""

from __future__ import annotations

import argparse
import getpass
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="StudyInstanceUID")
    parser.add_argument("--database-url", help="overrides LUMBAR_NODE_DATABASE_URL")


def run(args: argparse.Namespace) -> int:
    from dicom_node.config import load_config
    from dicom_node.db.session import make_engine, make_sessionmaker
    from dicom_node.delivery.service import resend_study

    config = load_config()
    engine = make_engine(args.database_url or config.db_url)
    try:
        ids = resend_study(make_sessionmaker(engine), config, args.study,
                           actor=f"cli:{getpass.getuser()}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if not ids:
        print("no destination for this study: set DESTINATIONS or RETURN_PORTS", file=sys.stderr)
        return 1
    print(f"queued deliveries {', '.join(map(str, ids))}")
    return 0
