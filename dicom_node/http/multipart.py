"""multipart/related bodies for STOW-RS (in) and WADO-RS (out)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable


def boundary_of(content_type: str) -> str:
    if not content_type.lower().startswith("multipart/related"):
        raise ValueError(f"expected multipart/related, got {content_type!r}")
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    if not match:
        raise ValueError(f"no boundary in content type {content_type!r}")
    return match.group(1)


def split_parts(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """(headers, payload) of every part; headers are lower-cased."""
    delimiter = b"--" + boundary.encode("ascii")
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("malformed multipart part: no blank line after its headers")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip():
                headers[key.strip().lower()] = value.strip()
        parts.append((headers, payload))
    return parts


def build(parts: Iterable[bytes], part_type: str) -> tuple[bytes, str]:
    """Body and Content-Type of a multipart/related response."""
    boundary = secrets.token_hex(16)
    out = bytearray()
    for payload in parts:
        out += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        out += payload + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f'multipart/related; type="{part_type}"; boundary={boundary}'
