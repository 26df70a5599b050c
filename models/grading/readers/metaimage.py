"""Minimal MetaImage (.mha / .mhd) reader so SPIDER loads without SimpleITK.

Supports what SPIDER and ITK write: a ``key = value`` text header, raw data inline
(``ElementDataFile = LOCAL``) or in a detached file, optionally zlib-compressed, the common
element types, either byte order. Anything else is refused with the offending header value
named, so a file we cannot read never turns into a wrong array.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_TYPES: dict[str, str] = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2",
    "MET_INT": "i4", "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
_MAX_HEADER = 64 * 1024


@dataclass(frozen=True)
class MetaImage:
    """Pixels indexed ``[z, y, x]`` (numpy order) and the LPS affine of that indexing."""

    array: np.ndarray
    #: 4x4, maps (z, y, x, 1) indices to LPS millimetres (ITK physical space is LPS)
    affine: np.ndarray
    header: dict[str, str]

    @property
    def spacing_xyz(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.header.get("ElementSpacing", "1 1 1").split())


def _parse_header(raw: bytes, path: Path) -> tuple[dict[str, str], int]:
    header: dict[str, str] = {}
    pos = 0
    while pos < min(len(raw), _MAX_HEADER):
        end = raw.find(b"\n", pos)
        if end < 0:
            raise ValueError(f"{path}: MetaImage header has no ElementDataFile line")
        line = raw[pos:end].decode("latin-1").strip()
        pos = end + 1
        if not line:
            continue
        if "=" not in line:
            raise ValueError(f"{path}: malformed MetaImage header line {line!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        header[key] = value
        if key == "ElementDataFile":
            return header, pos
    raise ValueError(f"{path}: MetaImage header has no ElementDataFile line")


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def read_metaimage(path: str | Path) -> MetaImage:
    """Read an .mha (inline data) or .mhd (detached data) file."""
    path = Path(path)
    raw = path.read_bytes()
    header, data_start = _parse_header(raw, path)
    if header.get("ObjectType", "Image") != "Image":
        raise ValueError(f"{path}: ObjectType {header['ObjectType']!r} is not Image")
    ndims = int(header.get("NDims", "3"))
    dims = [int(v) for v in header["DimSize"].split()]
    if len(dims) != ndims or ndims not in (2, 3):
        raise ValueError(f"{path}: DimSize {header['DimSize']!r} does not match NDims {ndims}")
    etype = header.get("ElementType", "")
    if etype not in _TYPES:
        raise ValueError(f"{path}: unsupported ElementType {etype!r}")
    channels = int(header.get("ElementNumberOfChannels", "1"))
    if channels != 1:
        raise ValueError(f"{path}: ElementNumberOfChannels {channels} (only 1 is supported)")
    msb = _is_true(header.get("BinaryDataByteOrderMSB") or header.get("ElementByteOrderMSB"))
    dtype = np.dtype(_TYPES[etype]).newbyteorder(">" if msb else "<")

    data_file = header["ElementDataFile"]
    if data_file == "LOCAL":
        payload = raw[data_start:]
    elif data_file.upper() == "LIST" or "%" in data_file:
        raise ValueError(f"{path}: ElementDataFile {data_file!r} (file lists are not supported)")
    else:
        payload = (path.parent / data_file).read_bytes()
    if _is_true(header.get("CompressedData")):
        size = header.get("CompressedDataSize")
        if size is not None:
            payload = payload[: int(size)]
        try:
            payload = zlib.decompress(payload)
        except zlib.error as exc:
            raise ValueError(f"{path}: zlib data does not decompress: {exc}") from exc
    n = int(np.prod(dims))
    if len(payload) < n * dtype.itemsize:
        raise ValueError(f"{path}: {len(payload)} data bytes for {n} {etype} elements")
    arr = np.frombuffer(payload, dtype=dtype, count=n).astype(dtype.newbyteorder("="))
    arr = arr.reshape(dims[::-1])  # x varies fastest on disk

    spacing = [float(v) for v in header.get("ElementSpacing", " ".join(["1"] * ndims)).split()]
    origin_txt = header.get("Offset") or header.get("Position") or header.get("Origin")
    origin = [float(v) for v in origin_txt.split()] if origin_txt else [0.0] * ndims
    matrix_txt = (header.get("TransformMatrix") or header.get("Rotation")
                  or header.get("Orientation"))
    direction = (np.asarray([float(v) for v in matrix_txt.split()]).reshape(ndims, ndims)
                 if matrix_txt else np.eye(ndims))
    if len(spacing) != ndims or len(origin) != ndims:
        raise ValueError(f"{path}: ElementSpacing/Offset do not have {ndims} values")
    if ndims == 2:
        arr = arr[None]
        spacing, origin = spacing + [1.0], origin + [0.0]
        d3 = np.eye(3)
        d3[:2, :2] = direction
        direction = d3
    affine = np.eye(4)
    # row k of TransformMatrix is the LPS direction of index axis k (x, y, z); our index
    # order is (z, y, x), so the affine columns come reversed
    for col, axis in enumerate((2, 1, 0)):
        affine[:3, col] = direction[axis] * spacing[axis]
    affine[:3, 3] = origin
    return MetaImage(array=arr, affine=affine, header=header)


def write_metaimage(path: str | Path, array: np.ndarray, spacing_xyz: tuple[float, ...],
                    origin_xyz: tuple[float, ...] = (0.0, 0.0, 0.0),
                    compress: bool = False) -> None:
    """Write a 3-D ``[z, y, x]`` array as .mha (used to build fixtures and export crops)."""
    arr = np.ascontiguousarray(array)
    etype = {v: k for k, v in _TYPES.items() if k not in ("MET_LONG", "MET_ULONG")}
    code = arr.dtype.newbyteorder("<").str.lstrip("<|>")
    if code not in etype:
        raise ValueError(f"cannot write dtype {arr.dtype} as MetaImage")
    data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    if compress:
        data = zlib.compress(data)
    lines = [
        "ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
        f"CompressedData = {compress}",
        *([f"CompressedDataSize = {len(data)}"] if compress else []),
        "TransformMatrix = 1 0 0 0 1 0 0 0 1",
        "Offset = " + " ".join(str(v) for v in origin_xyz),
        "ElementSpacing = " + " ".join(str(v) for v in spacing_xyz),
        "DimSize = " + " ".join(str(v) for v in arr.shape[::-1]),
        f"ElementType = {etype[code]}", "ElementDataFile = LOCAL",
    ]
    Path(path).write_bytes(("\n".join(lines) + "\n").encode() + data)
