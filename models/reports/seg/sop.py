"""Construction of one DICOM SEG per segmented source series."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from models.reports.equipment import Algorithm, short_lo
from models.reports.seg.content import label_map, present_kinds, segment_descriptions

SERIES_DESCRIPTION = "AI lumbar segmentation"


def build_seg(
    source_images: Sequence[Dataset],
    labels: np.ndarray,
    algorithm: Algorithm,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = 9002,
    labelmap: bool = False,
    contributing_equipment: Sequence[hd.ContributingEquipment] | None = None,
    frame_numbers: Sequence[int] | None = None,
) -> hd.seg.Segmentation:
    """SEG of the SPIDER ``labels`` (``[slice,row,col]``) over ``source_images`` (same order).

    BINARY by default: every viewer reads it and 3D Slicer only auto-loads BINARY SEG
    referenced from an SR. All frames are kept (``omit_empty_frames=False``) because OHIF
    misplaces segments of SEGs with omitted frames. ``labelmap=True`` makes a LABELMAP SEG
    (smaller, faster) for sites whose viewer supports it.

    When the series is one multi-frame image, ``source_images`` repeats it for every slice
    and ``frame_numbers`` gives the frame of each slice (see ``models.reports.frames``).
    """
    images = list(source_images)
    if not images:
        raise ValueError("build_seg needs the source images of the segmented series")
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 3-D integer array, got {labels.dtype} {labels.shape}")
    series = {str(ds.SeriesInstanceUID) for ds in images}
    if len(series) != 1:
        raise ValueError(
            f"source images come from {len(series)} series {sorted(series)}; SEG is per series"
        )
    expected = (len(images), int(images[0].Rows), int(images[0].Columns))
    if labels.shape != expected:
        raise ValueError(f"labels shape {labels.shape} does not match the source series {expected}")
    kinds = present_kinds(labels)
    if not kinds:
        raise ValueError("labels contain no reported structure (vertebra, sacrum, disc or canal)")
    pixels = label_map(labels, kinds)
    images, pixels = _frames_of_one_instance(images, pixels, frame_numbers)
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=pixels,
        segmentation_type=(
            hd.seg.SegmentationTypeValues.LABELMAP
            if labelmap
            else hd.seg.SegmentationTypeValues.BINARY
        ),
        segment_descriptions=segment_descriptions(kinds, algorithm),
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer="lumbar-node",
        manufacturer_model_name=short_lo(algorithm.name),
        software_versions=short_lo(algorithm.version),
        device_serial_number=short_lo(algorithm.version),
        content_label="LUMBAR",
        content_description="Lumbar spine segmentation",
        omit_empty_frames=False,
        contributing_equipment=contributing_equipment,
    )
    seg.SeriesDescription = SERIES_DESCRIPTION
    return seg


def _frames_of_one_instance(
    images: list[Dataset], pixels: np.ndarray, frame_numbers: Sequence[int] | None
) -> tuple[list[Dataset], np.ndarray]:
    """Slices of a multi-frame source rearranged into its frame order (others unchanged)."""
    uids = [str(ds.SOPInstanceUID) for ds in images]
    if len(set(uids)) == len(uids):
        return images, pixels
    if len(set(uids)) != 1:
        raise ValueError("source images repeat some SOP instances but not all: mixed stacks")
    count = int(images[0].get("NumberOfFrames", 1) or 1)
    frames = list(frame_numbers or [])
    if len(frames) != len(images) or len(set(frames)) != len(frames):
        raise ValueError(f"a multi-frame source needs one distinct frame per slice, got {frames}")
    if min(frames) < 1 or max(frames) > count:
        raise ValueError(f"frame numbers {frames} outside 1..{count}")
    ordered = np.zeros((count, *pixels.shape[1:]), dtype=pixels.dtype)
    ordered[np.asarray(frames) - 1] = pixels
    return [images[0]], ordered


def segment_numbers(seg: Dataset) -> dict[str, int]:
    """Segment label -> segment number of a SEG built here (e.g. ``"L4/L5 disc"`` -> 10)."""
    return {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}
