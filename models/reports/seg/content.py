"""Segment descriptions and the label-map array handed to highdicom."""

from __future__ import annotations

import highdicom as hd
import numpy as np

from models.reports.equipment import Algorithm
from models.reports.seg.codes import ANATOMICAL_STRUCTURE, KIND_BY_LABEL, SEGMENT_KINDS, SegmentKind


def present_kinds(labels: np.ndarray) -> list[SegmentKind]:
    """Structures present in ``labels``, in segment-number order.

    Every vertebra (thoracic and partially visible ones included), the sacrum, every disc
    and the canal are reported; a value outside the label scheme is an error, since it
    means the labels are not what the caller thinks they are.
    """
    values = np.unique(labels)
    unknown = [v for v in values.tolist() if v != 0 and v not in KIND_BY_LABEL]
    if unknown:
        raise ValueError(
            f"labels contain {unknown[0]!r}, which is not a label value of a vertebra, "
            "disc, sacrum or canal"
        )
    present = set(values.tolist())
    return [kind for kind in SEGMENT_KINDS if kind.label_value in present]


def label_map(labels: np.ndarray, kinds: list[SegmentKind]) -> np.ndarray:
    """SPIDER labels -> segment numbers 1..len(kinds) (0 elsewhere)."""
    out = np.zeros(labels.shape, dtype=np.uint8)
    for number, kind in enumerate(kinds, start=1):
        out[labels == kind.label_value] = number
    return out


def segment_descriptions(
    kinds: list[SegmentKind], algorithm: Algorithm
) -> list[hd.seg.SegmentDescription]:
    identification = algorithm.identification()
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=kind.label,
            segmented_property_category=ANATOMICAL_STRUCTURE,
            segmented_property_type=kind.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification,
            display_color=hd.color.CIELabColor.from_rgb(*kind.rgb),
        )
        for number, kind in enumerate(kinds, start=1)
    ]
