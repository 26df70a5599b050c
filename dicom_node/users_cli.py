"""`lumbar-node users add NAME --role radiologist|admin` and `lumbar-node users list`.

The password comes from a file (`--password-file`, first line) or standard input, never
from the command line, where `ps` and shell history would show it. Runs in the node image:
nothing here needs torch or models/.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="overrides LUMBAR_NODE_DATABASE_URL")
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", parents=[common], help="create a console user")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("radiologist", "admin"))
    add.add_argument("--password-file", type=Path,
                     help="file whose first line is the password (else read from stdin)")
    sub.add_parser("list", parents=[common], help="list console users")


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        lines = args.password_file.read_text().splitlines()
        return lines[0] if lines else ""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ValueError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def run(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from dicom_node.audit_cli import migrated_sessions
    from dicom_node.db.models import User
    from dicom_node.db.session import transaction
    from dicom_node.http.auth import add_user

    with migrated_sessions(args.database_url) as sessions:
        if sessions is None:
            return 2
        if args.action == "list":
            with sessions() as session:
                users = list(session.scalars(select(User).order_by(User.name)))
            print(f"{'name':<24} {'role':<12} {'created (UTC)':<26} last sign-in")
            for u in users:
                state = " (disabled)" if u.disabled else ""
                print(f"{u.name:<24} {u.role:<12} {u.created_at.isoformat()[:19]:<26} "
                      f"{u.last_login_at.isoformat()[:19] if u.last_login_at else '-'}{state}")
            return 0
        try:
            password = _password(args)
            with transaction(sessions) as session:
                add_user(session, args.name, args.role, password,
                         actor=f"cli:{getpass.getuser()}")
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"user {args.name} added with role {args.role}")
        return 0
