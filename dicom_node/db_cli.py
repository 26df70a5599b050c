"""`lumbar-node db upgrade|current|check`: schema management for operators."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("upgrade", "current", "check"))
    parser.add_argument("--database-url", help="overrides LUMBAR_NODE_DATABASE_URL")
    parser.add_argument("--revision", default="head", help="target of upgrade (default head)")


def run(args: argparse.Namespace) -> int:
    from dicom_node.config import load_config
    from dicom_node.db import migrate
    from dicom_node.db.session import make_engine

    config = load_config()
    url = args.database_url or config.db_url
    if args.action == "upgrade":
        migrate.upgrade(url, args.revision)
        print(f"database at revision {migrate.head_revision(url)}")
        return 0
    engine = make_engine(url)
    try:
        current = migrate.current_revision(engine)
        head = migrate.head_revision(url)
        if args.action == "current":
            print(f"current {current or '(empty)'}; head {head}")
            return 0 if current == head else 1
        if current != head:
            print(f"database at {current or '(empty)'}, code expects {head}: run "
                  "`lumbar-node db upgrade`", file=sys.stderr)
            return 1
        diffs = migrate.drift(engine)
        for diff in diffs:
            print(f"drift: {diff}", file=sys.stderr)
        print("schema matches models" if not diffs else f"{len(diffs)} differences")
        return 1 if diffs else 0
    finally:
        engine.dispose()
