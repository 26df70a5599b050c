"""Deterministic hostile variants of a valid DICOM Part 10 file.

A PACS, a modality with a firmware bug or an attacker can send any bytes. Each mutant keeps
a name saying what was broken so a failure points at the input that caused it. The same
seed always gives the same mutants, so a failing run can be replayed exactly.
"""

from __future__ import annotations

import copy
import io
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom import config as pydicom_config
from pydicom.dataset import Dataset

HOSTILE_UIDS = (
    "../../etc/passwd",
    "1.2.3/../../x",
    "..",
    "/tmp/lumbar-escape",
    "1.2.3\\..\\..\\x",
    "1." + "9" * 120,  # over-long
    "1.2.3\x00../../x",
    "\x00" * 8,
    "1.2.3\x00.4",
    "1.2.3.4.05",  # leading zero component
    "",
    "1.2.3.4 5",
    "%2e%2e%2f%2e%2e%2fetc",
)
BAD_TRANSFER_SYNTAXES = ("1.2.3.4", "1.2.840.10008.1.2.4.9999", "../../ts", "",
                         "1.2.840.10008.1.2.1" + "9" * 50)


@dataclass(frozen=True)
class Mutant:
    name: str
    data: bytes  # the whole Part 10 file
    #: True when the file meta is intact (a DIMSE client can still send the body)
    meta_intact: bool


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    with _lenient_writing():
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class _lenient_writing:
    """pydicom refuses to write invalid values by default; a fuzzer must write them."""

    def __enter__(self) -> None:
        self.saved = pydicom_config.settings.writing_validation_mode
        pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE

    def __exit__(self, *exc: object) -> None:
        pydicom_config.settings.writing_validation_mode = self.saved


def body_offset(data: bytes) -> int:
    """Where the dataset starts after the preamble and file meta group."""
    if data[128:132] != b"DICM":
        raise ValueError("not a Part 10 file (no DICM prefix)")
    group_length = struct.unpack("<I", data[140:144])[0]
    return 144 + group_length


def _elements(data: bytes, start: int) -> list[tuple[int, int, int]]:
    """(offset, tag, header length) of top-level explicit VR little endian elements."""
    out, pos = [], start
    while pos + 8 <= len(data):
        group, elem = struct.unpack("<HH", data[pos:pos + 4])
        vr = data[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"OV", b"UC",
                  b"UR", b"SV", b"UV"):
            length = struct.unpack("<I", data[pos + 8:pos + 12])[0]
            header = 12
        else:
            length = struct.unpack("<H", data[pos + 6:pos + 8])[0]
            header = 8
        out.append((pos, (group << 16) | elem, header))
        if length == 0xFFFFFFFF:
            break
        pos += header + length
    return out


def mutants(template: Dataset, seed: int, count: int) -> Iterator[Mutant]:
    """``count`` mutants of ``template`` (explicit VR little endian, with file meta)."""
    rng = random.Random(seed)
    valid = _part10(template)
    start = body_offset(valid)
    elements = [e for e in _elements(valid, start) if e[1] != 0x7FE00010]
    makers = [
        lambda i: _truncated(valid, rng, start),
        lambda i: _wrong_vr(valid, rng, elements),
        lambda i: _huge_length(valid, rng, elements),
        lambda i: _bad_transfer_syntax(template, i),
        lambda i: _hostile_uid(template, rng, i),
        lambda i: _nul_bytes(valid, rng, start),
        lambda i: _flipped_bytes(valid, rng, start),
        lambda i: _no_prefix(valid, rng),
    ]
    for i in range(count):
        yield makers[i % len(makers)](i // len(makers))


def _truncated(valid: bytes, rng: random.Random, start: int) -> Mutant:
    cut = rng.randrange(start + 1, len(valid) - 1)
    return Mutant(f"truncated at {cut}/{len(valid)}", valid[:cut], True)


def _wrong_vr(valid: bytes, rng: random.Random, elements: list[tuple[int, int, int]]) -> Mutant:
    pos, tag, _ = rng.choice(elements)
    vr = rng.choice([b"SQ", b"UN", b"OB", b"XX", b"\x00\x00", b"US", b"FD", b"AT"])
    data = bytearray(valid)
    data[pos + 4:pos + 6] = vr
    return Mutant(f"VR of ({tag >> 16:04X},{tag & 0xFFFF:04X}) set to {vr!r}", bytes(data), True)


def _huge_length(valid: bytes, rng: random.Random,
                 elements: list[tuple[int, int, int]]) -> Mutant:
    pos, tag, header = rng.choice(elements)
    data = bytearray(valid)
    if header == 12:
        value = rng.choice([0xFFFFFFF0, 0x7FFFFFFF, 0xFFFFFFFE])
        data[pos + 8:pos + 12] = struct.pack("<I", value)
    else:
        value = rng.choice([0xFFFF, 0xFFFE, 0x8001])
        data[pos + 6:pos + 8] = struct.pack("<H", value)
    return Mutant(f"length of ({tag >> 16:04X},{tag & 0xFFFF:04X}) set to {value:#x}",
                  bytes(data), True)


def _bad_transfer_syntax(template: Dataset, i: int) -> Mutant:
    """The body stays explicit VR little endian; only the meta claims another syntax."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    valid = _part10(template)
    meta = copy.deepcopy(template.file_meta)
    uid = BAD_TRANSFER_SYNTAXES[i % len(BAD_TRANSFER_SYNTAXES)]
    meta.TransferSyntaxUID = uid
    buffer = DicomBytesIO()
    with _lenient_writing():
        write_file_meta_info(buffer, meta, enforce_standard=False)
    data = valid[:128] + b"DICM" + buffer.getvalue() + valid[body_offset(valid):]
    return Mutant(f"transfer syntax {uid!r}", data, False)


def _hostile_uid(template: Dataset, rng: random.Random, i: int) -> Mutant:
    ds = copy.deepcopy(template)
    uid = HOSTILE_UIDS[i % len(HOSTILE_UIDS)]
    keyword = rng.choice(["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                          "SOPClassUID"])
    setattr(ds, keyword, uid)
    return Mutant(f"{keyword} = {uid!r}", _part10(ds), True)


def _nul_bytes(valid: bytes, rng: random.Random, start: int) -> Mutant:
    data = bytearray(valid)
    at = rng.randrange(start, len(data) - 16)
    n = rng.randrange(1, 16)
    data[at:at + n] = b"\x00" * n
    return Mutant(f"{n} NUL bytes at {at}", bytes(data), True)


def _flipped_bytes(valid: bytes, rng: random.Random, start: int) -> Mutant:
    data = bytearray(valid)
    spots = sorted(rng.randrange(start, len(data)) for _ in range(rng.randrange(1, 8)))
    for spot in spots:
        data[spot] = rng.randrange(256)
    return Mutant(f"random bytes at {spots}", bytes(data), True)


def _no_prefix(valid: bytes, rng: random.Random) -> Mutant:
    cut = rng.choice([0, 64, 128, 132, 140])
    data = valid[cut:] if cut else rng.randbytes(rng.randrange(1, 400))
    return Mutant(f"file cut before byte {cut}" if cut else "random bytes", data, False)
