"""DICOM Segmentation of the labelled lumbar anatomy."""

from models.reports.seg.sop import build_seg, segment_numbers

__all__ = ["build_seg", "segment_numbers"]
