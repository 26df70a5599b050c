"""`lumbar-node pull`: fetch studies from a PACS over DICOMweb into the node.

The pulled instances land in the node's database and spool; the running `lumbar-node serve`
closes the study and queues its analysis as for a pushed study. Examples::

    lumbar-node pull --url https://pacs/dicom-web --study 1.2.840....
    lumbar-node pull --url https://pacs/dicom-web --filter AccessionNumber=A123
"""

from __future__ import annotations

import argparse
import os


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="DICOMweb base URL of the PACS")
    parser.add_argument("--study", action="append", default=[], metavar="UID",
                        help="StudyInstanceUID to pull (repeatable)")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="QIDO-RS filter, e.g. AccessionNumber=A123 (repeatable)")
    parser.add_argument("--limit", type=int, default=10,
                        help="most studies a filter search may pull (default 10)")
    parser.add_argument("--token-env", default="LUMBAR_NODE_PULL_TOKEN",
                        help="environment variable holding the PACS bearer token")
    parser.add_argument("--ca-bundle", default=None, help="CA file to verify https against")
    parser.add_argument("--config", help="TOML settings file (else LUMBAR_NODE_* variables)")


def parse_filters(items: list[str]) -> dict[str, str]:
    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--filter expects KEY=VALUE, got {item!r}")
        filters[key.strip()] = value.strip()
    return filters


def run(args: argparse.Namespace) -> int:
    import logging
    import sys
    from pathlib import Path

    from dicom_node.config import load_config
    from dicom_node.db.session import make_engine, make_sessionmaker
    from dicom_node.pull import PullError, pull

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(toml_path=Path(args.config) if args.config else None)
    engine = make_engine(config.db_url)
    try:
        results = pull(config, make_sessionmaker(engine), args.url, study_uids=args.study,
                       filters=parse_filters(args.filter), limit=args.limit,
                       token=os.environ.get(args.token_env, ""), ca_bundle=args.ca_bundle)
    except (PullError, ValueError) as exc:
        print(f"pull failed: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    for r in results:
        print(f"{r.study_instance_uid}: {r.retrieved} retrieved, {r.stored} stored, "
              f"{r.duplicates} already held, {len(r.refused)} refused")
        for reason in r.refused:
            print(f"  refused {reason}")
    return 0 if all(not r.refused for r in results) else 1
