"""Frames of Enhanced (multi-frame) MR sources.

A scanner may send a series as one Enhanced MR instance; its volume then repeats one SOP
instance UID for every slice, sorted by position rather than by frame. References into such
an instance need the frame number of each slice, found here by matching the slice's
position to the per-frame ImagePositionPatient.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset

from models.study import Volume


def is_multiframe(header: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in header


def _group_value(header: Dataset, frame: int, sequence: str, keyword: str) -> object:
    groups = [header.PerFrameFunctionalGroupsSequence[frame - 1]]
    if "SharedFunctionalGroupsSequence" in header:
        groups.append(header.SharedFunctionalGroupsSequence[0])
    for group in groups:
        if sequence in group and keyword in group[sequence][0]:
            return group[sequence][0][keyword].value
    raise ValueError(f"frame {frame} of {header.SOPInstanceUID} has no {keyword}")


def frame_numbers(header: Dataset, volume: Volume, slices: Sequence[int]) -> list[int]:
    """1-based frame of ``header`` holding each of the volume's ``slices``."""
    count = int(header.get("NumberOfFrames", 1) or 1)
    positions = np.array(
        [
            [
                float(v)
                for v in _group_value(header, f, "PlanePositionSequence", "ImagePositionPatient")
            ]
            for f in range(1, count + 1)
        ]
    )
    tolerance = 0.5 * float(volume.spacing[0])
    frames: list[int] = []
    for index in slices:
        origin = volume.index_to_lps(np.array([index, 0.0, 0.0]))
        distance = np.linalg.norm(positions - origin, axis=1)
        best = int(np.argmin(distance))
        if distance[best] > tolerance:
            raise ValueError(
                f"slice {index} of series {volume.series_instance_uid} matches no frame of "
                f"{header.SOPInstanceUID} (nearest {distance[best]:.2f} mm away)"
            )
        frames.append(best + 1)
    return frames


def plane(header: Dataset, frame: int | None) -> tuple[list[float], list[float]]:
    """(ImageOrientationPatient, PixelSpacing) of an instance or one of its frames."""
    if frame is None or not is_multiframe(header):
        if "ImageOrientationPatient" not in header or "PixelSpacing" not in header:
            raise ValueError(f"{header.get('SOPInstanceUID')} has no image plane attributes")
        return (
            [float(v) for v in header.ImageOrientationPatient],
            [float(v) for v in header.PixelSpacing],
        )
    iop = _group_value(header, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _group_value(header, frame, "PixelMeasuresSequence", "PixelSpacing")
    return [float(v) for v in iop], [float(v) for v in spacing]
