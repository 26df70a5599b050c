"""UID checks: every UID that reaches a path or a query passes through here first."""

from __future__ import annotations

import hashlib
import re

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def validate_uid(value: object, name: str = "UID") -> str:
    """The UID as a string, or ValueError naming the bad value (PS3.5 9.1: digits and dots)."""
    text = str(value if value is not None else "").rstrip("\x00").strip()
    if not text or len(text) > 64 or not _UID_RE.match(text):
        raise ValueError(f"invalid {name} {text[:80]!r}: expected dotted digits, at most 64 chars")
    return text


def uid_hash(uid: str) -> str:
    return hashlib.sha1(uid.encode("ascii")).hexdigest()
