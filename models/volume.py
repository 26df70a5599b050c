"""DICOM series files to :class:`models.study.Volume` objects with a correct LPS affine.

What arrives from a PACS is rarely a clean stack: instances come in any order, InstanceNumber
is unreliable, a slice may be sent twice (same SOP instance, or a re-acquired slice at the
same position), axials are acquired as several blocks angled along each disc, and some
scanners send one Enhanced MR object holding every frame. Each of those is handled here so
that every later stage can trust ``Volume.affine``; anything dropped is recorded in the
warnings rather than silently lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from models.study import Volume

#: normals closer than this (degrees) belong to the same stack
ORIENTATION_TOLERANCE_DEG = 2.0
#: a gap larger than this multiple of the typical spacing starts a new stack
GAP_FACTOR = 1.6
#: positions closer than this fraction of the typical spacing are the same slice
DUPLICATE_FRACTION = 0.1
#: spacing deviating more than this fraction from the mean is reported as uneven
UNEVEN_FRACTION = 0.1


@dataclass
class SliceImage:
    """One 2-D image (a classic instance or one frame of a multi-frame object)."""

    sop_instance_uid: str
    iop: np.ndarray
    ipp: np.ndarray
    pixel_spacing: tuple[float, float]
    pixels: np.ndarray
    acquisition_number: int
    instance_number: int
    source: str
    frame: int = 0

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.iop[:3], self.iop[3:6])
        return n / np.linalg.norm(n)


@dataclass
class AssembledSeries:
    """All stacks of one series and what was dropped or doubted on the way."""

    series_instance_uid: str
    volumes: list[Volume] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def main(self) -> Volume:
        """The stack with the most slices (the only one for a sagittal series)."""
        if not self.volumes:
            raise ValueError(f"series {self.series_instance_uid} has no readable images")
        return max(self.volumes, key=lambda v: v.array.shape[0])


def _float_list(value: object, n: int, what: str, source: str) -> np.ndarray:
    if value is None:
        raise ValueError(f"{source}: missing {what}")
    arr = np.asarray([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    if arr.shape != (n,):
        raise ValueError(f"{source}: {what} has {arr.size} values, expected {n}")
    return arr


def _group_attr(groups: Sequence[Dataset | None], seq: str, attr: str) -> object:
    for group in groups:
        if group is not None and seq in group and len(group[seq].value) and attr in group[seq][0]:
            return group[seq][0][attr].value
    return None


def _rescale(pixels: np.ndarray, slope: object, intercept: object) -> np.ndarray:
    out = pixels.astype(np.float32)
    if slope not in (None, "") and float(slope) != 1.0:  # type: ignore[arg-type]
        out *= float(slope)  # type: ignore[arg-type]
    if intercept not in (None, "") and float(intercept) != 0.0:  # type: ignore[arg-type]
        out += float(intercept)  # type: ignore[arg-type]
    return out


def dataset_slices(ds: Dataset, source: str) -> list[SliceImage]:
    """Split a dataset into 2-D images with their geometry (classic or Enhanced multi-frame)."""
    pixels = ds.pixel_array
    sop = str(ds.SOPInstanceUID)
    acq = int(ds.get("AcquisitionNumber", 0) or 0)
    inst = int(ds.get("InstanceNumber", 0) or 0)
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds \
            else None
        frames = pixels if pixels.ndim == 3 else pixels[None]
        out = []
        for i, per in enumerate(ds.PerFrameFunctionalGroupsSequence):
            groups = (per, shared)
            iop = _group_attr(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
            ipp = _group_attr(groups, "PlanePositionSequence", "ImagePositionPatient")
            ps = _group_attr(groups, "PixelMeasuresSequence", "PixelSpacing")
            slope = _group_attr(groups, "PixelValueTransformationSequence", "RescaleSlope")
            icpt = _group_attr(groups, "PixelValueTransformationSequence", "RescaleIntercept")
            spacing = _float_list(ps, 2, "PixelSpacing", f"{source} frame {i + 1}")
            out.append(SliceImage(
                sop, _float_list(iop, 6, "ImageOrientationPatient", f"{source} frame {i + 1}"),
                _float_list(ipp, 3, "ImagePositionPatient", f"{source} frame {i + 1}"),
                (float(spacing[0]), float(spacing[1])), _rescale(frames[i], slope, icpt),
                acq, inst, source, frame=i + 1))
        return out
    if pixels.ndim != 2:
        raise ValueError(f"{source}: {pixels.ndim}-D pixel data without per-frame geometry")
    spacing = _float_list(ds.get("PixelSpacing"), 2, "PixelSpacing", source)
    return [SliceImage(
        sop, _float_list(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", source),
        _float_list(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", source),
        (float(spacing[0]), float(spacing[1])),
        _rescale(pixels, ds.get("RescaleSlope"), ds.get("RescaleIntercept")), acq, inst, source)]


def _group_by_orientation(images: list[SliceImage]) -> list[list[SliceImage]]:
    groups: list[list[SliceImage]] = []
    cos_tol = np.cos(np.radians(ORIENTATION_TOLERANCE_DEG))
    for img in images:
        for group in groups:
            ref = group[0]
            same_plane = abs(float(ref.normal @ img.normal)) >= cos_tol and np.allclose(
                ref.iop, img.iop, atol=0.05)
            if same_plane and ref.pixels.shape == img.pixels.shape and np.allclose(
                    ref.pixel_spacing, img.pixel_spacing, rtol=1e-3):
                group.append(img)
                break
        else:
            groups.append([img])
    return groups


def _typical_spacing(positions: np.ndarray) -> float:
    diffs = np.diff(positions)
    diffs = diffs[diffs > 1e-3]
    return float(np.median(diffs)) if diffs.size else 1.0


def _dedupe_positions(stack: list[SliceImage], normal: np.ndarray,
                      warnings: list[str]) -> list[SliceImage]:
    """One image per position: the latest acquisition wins (a repeat replaces a moved slice)."""
    positions = np.array([img.ipp @ normal for img in stack])
    tol = DUPLICATE_FRACTION * _typical_spacing(np.sort(positions))
    order = np.argsort(positions, kind="stable")
    kept: list[SliceImage] = []
    kept_pos: list[float] = []
    for i in order:
        img, pos = stack[i], positions[i]
        if kept and abs(pos - kept_pos[-1]) <= tol:
            other = kept[-1]
            winner = img if img.acquisition_number > other.acquisition_number else other
            loser = other if winner is img else img
            kept[-1] = winner
            warnings.append(
                f"two images at {pos:.2f} mm along the normal: kept {winner.sop_instance_uid} "
                f"(acquisition {winner.acquisition_number}), dropped {loser.sop_instance_uid} "
                f"(acquisition {loser.acquisition_number})")
            continue
        kept.append(img)
        kept_pos.append(pos)
    return kept


def _split_gaps(stack: list[SliceImage], normal: np.ndarray) -> list[list[SliceImage]]:
    positions = np.array([img.ipp @ normal for img in stack])
    if len(stack) < 3:
        return [stack]
    typical = _typical_spacing(positions)
    parts: list[list[SliceImage]] = [[stack[0]]]
    for img, gap in zip(stack[1:], np.diff(positions), strict=True):
        if gap > GAP_FACTOR * typical:
            parts.append([img])
        else:
            parts[-1].append(img)
    return parts


def _affine(stack: list[SliceImage], normal: np.ndarray, fallback_spacing: float) -> np.ndarray:
    first = stack[0]
    rowdir, coldir = first.iop[:3], first.iop[3:6]
    if len(stack) > 1:
        step = (stack[-1].ipp - first.ipp) / (len(stack) - 1)
    else:
        step = normal * fallback_spacing
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = coldir * first.pixel_spacing[0]
    affine[:3, 2] = rowdir * first.pixel_spacing[1]
    affine[:3, 3] = first.ipp
    return affine


def assemble_datasets(datasets: Iterable[tuple[str, Dataset]], role: str = "",
                      series_instance_uid: str | None = None) -> AssembledSeries:
    """Build the stacks of one series from ``(source name, dataset)`` pairs."""
    result = AssembledSeries(series_instance_uid or "")
    images: list[SliceImage] = []
    seen: set[tuple[str, int]] = set()
    description = ""
    thickness = 1.0
    for source, ds in datasets:
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not result.series_instance_uid:
            result.series_instance_uid = uid
        elif uid and uid != result.series_instance_uid:
            result.warnings.append(f"{source}: belongs to series {uid}, skipped")
            continue
        try:
            found = dataset_slices(ds, source)
        except Exception as exc:  # undecodable pixels or broken geometry: skip, record
            result.warnings.append(f"{source}: skipped ({type(exc).__name__}: {exc})")
            continue
        description = description or str(ds.get("SeriesDescription", ""))
        thickness = float(ds.get("SpacingBetweenSlices", ds.get("SliceThickness", 1.0)) or 1.0)
        for img in found:
            key = (img.sop_instance_uid, img.frame)
            if key in seen:
                result.warnings.append(
                    f"{source}: SOP instance {img.sop_instance_uid} received twice, kept the first")
                continue
            seen.add(key)
            images.append(img)
    for group in _group_by_orientation(images):
        normal = group[0].normal
        stack = _dedupe_positions(group, normal, result.warnings)
        for part in _split_gaps(stack, normal):
            pos = np.array([img.ipp @ normal for img in part])
            diffs = np.diff(pos)
            if diffs.size and (np.abs(diffs - diffs.mean()) > UNEVEN_FRACTION * diffs.mean()).any():
                result.warnings.append(
                    f"uneven slice spacing {diffs.min():.2f}-{diffs.max():.2f} mm in a stack of "
                    f"{len(part)}: affine uses the mean {diffs.mean():.2f} mm, positions off by "
                    f"up to {np.abs(pos - pos[0] - diffs.mean() * np.arange(len(pos))).max():.2f}"
                    " mm")
            array = np.stack([img.pixels for img in part])
            result.volumes.append(Volume(
                role=role, series_instance_uid=result.series_instance_uid, array=array,
                affine=_affine(part, normal, thickness),
                sop_instance_uids=tuple(img.sop_instance_uid for img in part),
                description=description))
    if len(result.volumes) > 1:
        result.warnings.append(f"series split into {len(result.volumes)} stacks by orientation "
                               "and position gaps")
    return result


def assemble_series(files: Sequence[Path], role: str = "") -> AssembledSeries:
    """Read one series' files (any order, any supported transfer syntax) into stacks."""
    def read() -> Iterable[tuple[str, Dataset]]:
        for path in files:
            try:
                yield str(path), pydicom.dcmread(path)
            except Exception as exc:  # unreadable file: recorded below, never fatal
                skipped.append(f"{path}: unreadable ({type(exc).__name__}: {exc})")

    skipped: list[str] = []
    result = assemble_datasets(read(), role)
    result.warnings[:0] = skipped
    return result


def load_volume(files: Sequence[Path], role: str = "") -> Volume:
    """The main stack of one series; raises ValueError when nothing in it is readable."""
    return assemble_series(files, role).main
