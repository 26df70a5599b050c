"""Mid-sagittal PNG slices of ``spider-midsag`` as the pipeline's :class:`Volume`.

The disc grader, its evaluation and the disc-height benchmark all read the same PNGs; one
reader keeps their geometry identical, so a crop the grader learned from lines up with the
slice the node measures on. Rows run head->feet and columns anterior->posterior, with the
different row and column spacings of ``series.csv`` (pixels are not square there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.study import Volume


def midsag_volume(image: np.ndarray, row_mm: float, col_mm: float, key: str,
                  thickness_mm: float = 4.0, role: str = "sag_t2") -> Volume:
    """One slice, rows head->feet, columns anterior->posterior, as the pipeline's grid; the
    slice is as thick as acquired, so volumes of structures on it are those of its voxels."""
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError(f"image must be a non-empty 2-D slice, got shape {image.shape}")
    for name, value in (("row_mm", row_mm), ("col_mm", col_mm), ("thickness_mm", thickness_mm)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of mm, got {value!r}")
    affine = np.array([[-thickness_mm, 0.0, 0.0, 0.0], [0.0, 0.0, col_mm, 0.0],
                       [0.0, -row_mm, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    return Volume(role, f"midsag-{key}", image[None].astype(np.float32), affine,
                  (f"midsag-{key}-0",))


def load_midsag_volume(path: Path, row_mm: float, col_mm: float, key: str,
                       thickness_mm: float = 4.0, role: str = "sag_t2") -> Volume:
    """Read a greyscale PNG and wrap it with :func:`midsag_volume`."""
    from PIL import Image

    image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    return midsag_volume(image, row_mm, col_mm, key, thickness_mm, role)
