"""Writing one rendered series to disk, including the file-level faults PACS send.

The faults (duplicate files, repeated positions, shuffled numbering, a broken file) are the
ones a receiving node must survive; each is recorded in the returned record so tests know
exactly what to expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dicomio import StudyInfo, Timing, build_dataset, make_uid, save
from .series import SliceGeom


@dataclass
class SeriesRecord:
    key: str
    role: str
    series_instance_uid: str
    series_number: int
    description: str
    files: list[str] = field(default_factory=list)
    #: SOP instance UIDs in slice-position order (the order of the label volume)
    sop_instance_uids: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def write_series(
    out_dir: Path,
    key: str,
    role: str,
    info: StudyInfo,
    slices: list[SliceGeom],
    pixels: np.ndarray,
    *,
    series_number: int,
    spacing_between: float,
    tim: Timing,
    rng: np.random.Generator,
    shuffle: bool = False,
    image_types: list[tuple[str, ...]] | None = None,
) -> SeriesRecord:
    """Write slices (given in position order) as ``dicom/<key>/IMnnnn.dcm``."""
    desc_t = info.vendor.descriptions.get(key, key)
    description = desc_t.format(m=slices[0].rows)
    series_uid = make_uid(info.seed, key, "series")
    rec = SeriesRecord(key, role, series_uid, series_number, description)
    n = len(slices)
    order = np.arange(n)
    if shuffle:
        order = rng.permutation(n)
        while n > 2 and np.array_equal(order, np.arange(n)):
            order = rng.permutation(n)
    # order[i] = instance number - 1 of the slice at position i
    for pos in range(n):
        sop = make_uid(info.seed, key, "instance", pos)
        ds = build_dataset(
            info, series_uid=series_uid, series_number=series_number, description=description,
            geom=slices[pos], pixels=pixels[pos], sop_uid=sop,
            instance_number=int(order[pos]) + 1, acquisition_number=1,
            spacing_between=spacing_between, tim=tim,
            image_type=image_types[pos] if image_types else ("ORIGINAL", "PRIMARY", "OTHER"),
        )
        rel = f"dicom/{key}/IM{int(order[pos]) + 1:04d}.dcm"
        save(ds, out_dir / rel)
        rec.sop_instance_uids.append(sop)
    rec.files = [f"dicom/{key}/IM{i + 1:04d}.dcm" for i in range(n)]
    rec.extra["instance_of_position"] = [int(o) + 1 for o in order]
    rec.extra["tim"] = tim
    rec.extra["slices"] = slices
    return rec


def add_duplicate_instance(out_dir: Path, rec: SeriesRecord, rng: np.random.Generator
                           ) -> list[str]:
    """Copy one file under a second name: same SOP Instance UID twice."""
    src = rec.files[int(rng.integers(len(rec.files)))]
    dst = f"dicom/{rec.key}/IM{len(rec.files) + 1:04d}.dcm"
    (out_dir / dst).write_bytes((out_dir / src).read_bytes())
    rec.files.append(dst)
    return [src, dst]


def add_duplicate_position(out_dir: Path, rec: SeriesRecord, info: StudyInfo,
                           pixels: np.ndarray, rng: np.random.Generator) -> dict:
    """A repeated acquisition of one slice: same position, new SOP UID, AcquisitionNumber 2."""
    pos = len(rec.sop_instance_uids) // 2
    slices: list[SliceGeom] = rec.extra["slices"]
    noisy = pixels[pos].astype(np.float32) + rng.normal(0, 8.0, pixels[pos].shape)
    repeat = np.clip(np.rint(noisy), 0, 65535).astype(np.uint16)
    sop = make_uid(info.seed, rec.key, "repeat", pos)
    number = len(rec.files) + 1
    ds = build_dataset(
        info, series_uid=rec.series_instance_uid, series_number=rec.series_number,
        description=rec.description, geom=slices[pos], pixels=repeat, sop_uid=sop,
        instance_number=number, acquisition_number=2,
        spacing_between=float(np.linalg.norm(slices[1].ipp - slices[0].ipp)) if len(slices) > 1
        else slices[0].thickness, tim=rec.extra["tim"],
    )
    rel = f"dicom/{rec.key}/IM{number:04d}.dcm"
    save(ds, out_dir / rel)
    rec.files.append(rel)
    original = rec.files[rec.extra["instance_of_position"][pos] - 1]
    return {"series": rec.key, "position_index": pos, "files": [original, rel],
            "sop_instance_uids": [rec.sop_instance_uids[pos], sop], "acquisition_numbers": [1, 2]}


def corrupt_file(out_dir: Path, rec: SeriesRecord, rng: np.random.Generator) -> str:
    """Garble the preamble and DICM prefix and cut the file short, as a failed transfer does."""
    rel = rec.files[int(rng.integers(len(rec.files)))]
    path = out_dir / rel
    data = bytearray(path.read_bytes())
    data[0:132] = bytes(rng.integers(0, 256, 132, dtype=np.uint8))
    data[128:132] = b"XXXX"
    path.write_bytes(bytes(data[: len(data) * 2 // 5]))
    return rel
