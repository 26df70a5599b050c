"""`lumbar-node feedback export --out DIR`: radiologists' confirmations and corrections as
labels in the RSNA 2024 layout and disc labels in SPIDER's (see dicom_node.feedback.export),
and `lumbar-node feedback agreement`: the agreement report as JSON. Both are audited."""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="overrides LUMBAR_NODE_DATABASE_URL")
    sub = parser.add_subparsers(dest="action", required=True)
    export = sub.add_parser("export", parents=[common],
                            help="write train.csv, studies.csv, discs.csv and gradings.csv")
    export.add_argument("--out", type=Path, required=True)
    sub.add_parser("agreement", parents=[common],
                   help="print agreement per model version as JSON")


def run(args: argparse.Namespace) -> int:
    from dicom_node import audit, feedback
    from dicom_node.audit_cli import migrated_sessions
    from dicom_node.db.session import transaction

    actor = f"cli:{getpass.getuser()}"
    with migrated_sessions(args.database_url) as sessions:
        if sessions is None:
            return 2
        with transaction(sessions) as session:
            if args.action == "agreement":
                report = feedback.agreement_report(feedback.all_reviews(session))
                audit.record(session, "feedback.agreement", actor=actor)
                print(json.dumps(report, indent=2))
                return 0
            counts = feedback.export(session, args.out)
            audit.record(session, "feedback.exported", actor=actor, out=str(args.out),
                         **counts)
    print(f"wrote {args.out}/train.csv ({counts['studies']} studies, {counts['labels']} "
          f"labels), studies.csv, discs.csv ({counts['disc_labels']} disc labels), "
          f"gradings.csv ({counts['discs_graded']} discs)")
    return 0
