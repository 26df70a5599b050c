"""Bring any sagittal slice into the one frame the network was trained in, and back.

Training slices (SPIDER, ~0.94 mm, head up, anterior left) and clinical series (0.5-0.8 mm,
any in-plane orientation the scanner chose) differ in pixel size, orientation and grey-level
range. The network sees only slices that were (1) turned so rows run head->feet and columns
anterior->posterior, (2) resampled to ``TARGET_SPACING_MM`` and (3) scaled by their own
percentiles, so the same code path serves training and inference and no statistics leak
between slices, series or sequences (T2 and STIR alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: In-plane pixel size the network works at. Close to the real training data (0.94 mm) so
#: training slices are barely resampled, fine enough for a ~12 mm canal (12 pixels).
TARGET_SPACING_MM = 1.0
#: Percentiles mapped to 0 and 1: robust to a few hot pixels and to the large dark background.
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5

# LPS axes: +y posterior, +z superior.
_POSTERIOR = np.array([0.0, 1.0, 0.0])
_SUPERIOR = np.array([0.0, 0.0, 1.0])


def normalise_intensity(image: np.ndarray) -> np.ndarray:
    """Map a slice's own 0.5th-99.5th percentile range to [0, 1] (float32)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError("slice contains NaN or infinite values")
    low, high = np.percentile(image, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high - low < 1e-6:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def resampled_shape(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[int, int]:
    """Grid size of a slice of ``shape`` pixels of ``spacing`` mm at ``TARGET_SPACING_MM``."""
    for value in spacing:
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"pixel spacing must be positive and finite, got {spacing}")
    return (
        max(1, round(shape[0] * spacing[0] / TARGET_SPACING_MM)),
        max(1, round(shape[1] * spacing[1] / TARGET_SPACING_MM)),
    )


def resample_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a 2-D float slice to ``shape`` (pixel centres aligned)."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    out = F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def resample_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of a 2-D label slice to ``shape`` (uint8)."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))[None, None]
    out = F.interpolate(tensor, size=shape, mode="nearest-exact")
    return out[0, 0].numpy().round().astype(np.uint8)


@dataclass(frozen=True)
class Orientation:
    """How to turn a volume's [slice,row,col] grid into canonical sagittal slices.

    Canonical: row index runs head->feet, column index anterior->posterior (the SPIDER
    PNG layout). Only transposes and flips are used, so the mapping is exact and invertible.
    """

    transpose: bool
    flip_rows: bool
    flip_cols: bool
    #: pixel spacing (mm) along the canonical rows and columns
    spacing: tuple[float, float]

    @classmethod
    def from_affine(cls, affine: np.ndarray) -> Orientation:
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {affine.shape}")
        row_vec, col_vec = affine[:3, 1], affine[:3, 2]
        row_mm, col_mm = float(np.linalg.norm(row_vec)), float(np.linalg.norm(col_vec))
        if row_mm <= 0 or col_mm <= 0:
            raise ValueError(f"affine has a zero in-plane axis: {affine[:3, 1:3].tolist()}")
        row_dir, col_dir = row_vec / row_mm, col_vec / col_mm
        normal = np.cross(row_dir, col_dir)
        if abs(normal[0]) < 0.5:
            raise ValueError(
                f"not a sagittal grid: slice normal {np.round(normal, 2).tolist()} is not along x"
            )
        # Which in-plane axis is closer to head-feet decides whether rows must become columns.
        transpose = abs(col_dir @ _SUPERIOR) > abs(row_dir @ _SUPERIOR)
        if transpose:
            row_dir, col_dir = col_dir, row_dir
            row_mm, col_mm = col_mm, row_mm
        return cls(
            transpose=bool(transpose),
            flip_rows=bool(row_dir @ _SUPERIOR > 0),  # rows must run towards the feet
            flip_cols=bool(col_dir @ _POSTERIOR < 0),  # columns must run towards the back
            spacing=(row_mm, col_mm),
        )

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """[slice,row,col] in the source grid -> [slice,row,col] canonical."""
        out = np.swapaxes(array, 1, 2) if self.transpose else array
        if self.flip_rows:
            out = out[:, ::-1, :]
        if self.flip_cols:
            out = out[:, :, ::-1]
        return np.ascontiguousarray(out)

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_canonical`."""
        out = array
        if self.flip_cols:
            out = out[:, :, ::-1]
        if self.flip_rows:
            out = out[:, ::-1, :]
        if self.transpose:
            out = np.swapaxes(out, 1, 2)
        return np.ascontiguousarray(out)


def spider_to_semantic(labels: np.ndarray) -> np.ndarray:
    """SPIDER label values -> semantic classes 0 bg, 1 vertebra, 2 disc, 3 canal.

    Vertebrae 1-99 (incl. sacrum 50) and partial vertebrae 101-199 are class 1, discs
    201-299 class 2, the canal (100) class 3. Any other value is an error, not background.
    """
    from lumbar_common.vocabulary import SPIDER_CANAL, SPIDER_DISC_OFFSET

    labels = np.asarray(labels)
    values = np.unique(labels)
    bad = values[(values < 0) | (values >= SPIDER_DISC_OFFSET + 100)]
    if bad.size:
        raise ValueError(f"label values outside the SPIDER scheme: {bad.tolist()[:10]}")
    out = np.zeros(labels.shape, dtype=np.uint8)
    out[(labels >= 1) & (labels < SPIDER_DISC_OFFSET)] = 1
    out[labels > SPIDER_DISC_OFFSET] = 2
    out[labels == SPIDER_CANAL] = 3
    bad_disc = values[values == SPIDER_DISC_OFFSET]
    if bad_disc.size:
        raise ValueError(f"label value {SPIDER_DISC_OFFSET} is not a SPIDER disc label")
    return out
