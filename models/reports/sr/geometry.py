"""Patient-space points of the findings to image coordinates on their source slice.

Viewers draw SR regions from SCOORD (pixel) coordinates of one image, so every ROI box and
measurement line of findings.json, given in LPS millimetres with a series and slice index,
is projected onto the in-plane pixel grid of that slice's instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from models.reports.frames import frame_numbers, is_multiframe
from models.study import Volume


class SliceLocator:
    """Finds the instance of (series, slice index) and projects LPS points onto it."""

    def __init__(self, volumes: Iterable[Volume], headers: Mapping[str, Dataset]) -> None:
        self._volumes: dict[str, list[Volume]] = {}
        for volume in volumes:
            self._volumes.setdefault(volume.series_instance_uid, []).append(volume)
        self._headers = headers

    def instance(
        self, series_instance_uid: str, slice_index: int, points_lps: np.ndarray | None = None
    ) -> tuple[Volume, str]:
        """The volume and SOP instance of a slice.

        An axial series acquired as angled blocks is several stacks under one series UID;
        a slice index alone is then ambiguous, so the stack whose slice lies closest to the
        given points is taken.
        """
        stacks = self._volumes.get(series_instance_uid)
        if not stacks:
            raise ValueError(f"series {series_instance_uid!r} is not among the study's volumes")
        if not isinstance(slice_index, int | np.integer) or isinstance(slice_index, bool):
            raise ValueError(f"slice index must be an integer, got {slice_index!r}")
        candidates = [v for v in stacks if 0 <= slice_index < len(v.sop_instance_uids)]
        if not candidates:
            raise ValueError(f"slice {slice_index} is outside series {series_instance_uid!r}")
        if points_lps is not None and len(candidates) > 1:

            def distance(volume: Volume) -> float:
                offset = volume.lps_to_index(points_lps)[:, 0] - slice_index
                return float(np.abs(offset * volume.spacing[0]).mean())

            candidates.sort(key=distance)
        volume = candidates[0]
        return volume, volume.sop_instance_uids[slice_index]

    def header(self, sop_instance_uid: str) -> Dataset:
        if sop_instance_uid not in self._headers:
            raise ValueError(f"no source file for SOP instance {sop_instance_uid!r}")
        return self._headers[sop_instance_uid]

    def pixel_points(
        self, series_instance_uid: str, slice_index: int, points_lps: Sequence[Sequence[float]]
    ) -> tuple[hd.sr.SourceImageForRegion, np.ndarray]:
        """(source image, (N, 2) column/row SCOORD data) for LPS points on a slice.

        SCOORD puts the top-left corner of the first pixel at (0, 0), so pixel centres,
        which the affine maps, sit at index + 0.5. Points are projected along the slice
        normal: an ROI corner a fraction of a millimetre off the plane still lands on it.
        The source image names its frame when the slice is a frame of a multi-frame image.
        """
        points = np.asarray(points_lps, dtype=np.float64)
        if (
            points.ndim != 2
            or points.shape[1] != 3
            or len(points) == 0
            or not np.isfinite(points).all()
        ):
            raise ValueError(f"points must be finite (N, 3) LPS coordinates, got {points_lps!r}")
        volume, sop = self.instance(series_instance_uid, slice_index, points)
        header = self.header(sop)
        frames = frame_numbers(header, volume, [slice_index]) if is_multiframe(header) else None
        source = hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=str(header.SOPClassUID),
            referenced_sop_instance_uid=sop,
            referenced_frame_numbers=frames,
        )
        index = volume.lps_to_index(points)
        return source, (index[:, [2, 1]] + 0.5).astype(np.float32)
