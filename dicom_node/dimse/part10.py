"""The DICOM file (PS3.10) a received C-STORE data set is spooled as.

pynetdicom's ``encoded_dataset()`` builds the file meta through a pydicom dataset whose
every UID assignment runs a validating regex; on the ingest hot path that was a fifth of the
receiver's own CPU per instance. The group is small and fixed (PS3.10 7.1), so it is written
here directly: the same bytes pynetdicom writes, plus the calling AE as Source Application
Entity Title (0002,0016) for provenance.
"""

from __future__ import annotations

import struct
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

_PREAMBLE = b"\x00" * 128 + b"DICM"
_VERSION = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def _element(element: int, vr: bytes, value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += pad
    if len(raw) > 0xFFFF:
        raise ValueError(f"value of (0002,{element:04X}) too long for the file meta: "
                         f"{len(raw)} bytes")
    return struct.pack("<HH2sH", 0x0002, element, vr, len(raw)) + raw


def file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
              source_ae: str | None = None) -> bytes:
    """Encoded group 0002 (Explicit VR Little Endian, with its group length)."""
    body = b"".join((
        _VERSION,
        _element(0x0002, b"UI", sop_class_uid, b"\x00"),
        _element(0x0003, b"UI", sop_instance_uid, b"\x00"),
        _element(0x0010, b"UI", transfer_syntax_uid, b"\x00"),
        _element(0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID, b"\x00"),
        _element(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION, b" "),
        _element(0x0016, b"AE", source_ae, b" ") if source_ae else b"",
    ))
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def part10(dataset: bytes, *, sop_class_uid: str, sop_instance_uid: str,
           transfer_syntax_uid: str, source_ae: str | None = None) -> bytes:
    """Preamble, file meta and the data set exactly as the peer encoded it."""
    return b"".join((_PREAMBLE, file_meta(
        sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
        transfer_syntax_uid=transfer_syntax_uid, source_ae=source_ae), dataset))


def from_c_store(event: Any, source_ae: str | None) -> bytes:
    """The file for a pynetdicom C-STORE event; ValueError for request UIDs that cannot be
    written (not ASCII, too long)."""
    request = event.request
    return part10(event.encoded_dataset(include_meta=False),
                  sop_class_uid=str(request.AffectedSOPClassUID or ""),
                  sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
                  transfer_syntax_uid=str(event.context.transfer_syntax),
                  source_ae=source_ae or None)
