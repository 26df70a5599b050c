"""Mid-sagittal preview with the labelled levels outlined and named.

The picture is what a reader checks first: whether the levels were counted from the right
vertebra. It therefore shows the instance outlines, the level names at each disc and the
calipers of the measurements, on the slice where the discs are centred.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from lumbar_common.vocabulary import SPIDER_CANAL, SPIDER_DISC_OFFSET, SPIDER_SACRUM
from models.study import LevelGeometry, Volume

#: output height in pixels (the slice is resampled to square pixels first)
HEIGHT = 640
_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def _window(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99.5])
    scaled = (image.astype(np.float32) - lo) / max(float(hi - lo), 1e-6)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _colour(value: int) -> tuple[int, int, int]:
    if value == SPIDER_CANAL:
        return (255, 255, 255)
    if value == SPIDER_SACRUM:
        return (255, 160, 0)
    if value > SPIDER_DISC_OFFSET:  # discs between the colours of their two vertebrae
        return _PALETTE[(value - SPIDER_DISC_OFFSET + 5) % len(_PALETTE)]
    return _PALETTE[value % len(_PALETTE)]


def mid_slice(volume: Volume, levels: Sequence[LevelGeometry]) -> int:
    """The slice nearest the mean disc centre (the middle slice when no level was found)."""
    if not levels:
        return volume.array.shape[0] // 2
    idx = volume.lps_to_index(np.array([g.disc_centre_lps for g in levels]))[:, 0]
    return int(np.clip(np.rint(idx.mean()), 0, volume.array.shape[0] - 1))


def render_overlay(volume: Volume, labels: np.ndarray | None, levels: Sequence[LevelGeometry],
                   measurements: Mapping[str, list[dict]], path: Path,
                   title: str = "") -> Path:
    """Write the preview PNG and return its path."""
    s = mid_slice(volume, levels)
    row_mm, col_mm = (float(v) for v in volume.spacing[1:])
    rows, cols = volume.array.shape[1:]
    scale = HEIGHT / (rows * row_mm)
    size = (max(1, round(cols * col_mm * scale)), HEIGHT)
    base = Image.fromarray(_window(volume.array[s])).resize(size, Image.Resampling.BILINEAR)
    canvas = np.array(base.convert("RGB"))
    if labels is not None:
        plane = labels[s]
        for value in np.unique(plane):
            if value == 0:
                continue
            mask = plane == value
            edge = mask & ~ndimage.binary_erosion(mask)
            big = np.array(Image.fromarray(edge.astype(np.uint8) * 255).resize(
                size, Image.Resampling.NEAREST)) > 0
            canvas[big] = _colour(int(value))
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)

    def xy(point: np.ndarray) -> tuple[float, float]:
        idx = volume.lps_to_index(point)
        return (float(idx[2]) + 0.5) * col_mm * scale, (float(idx[1]) + 0.5) * row_mm * scale

    for geom in levels:
        x, y = xy(geom.disc_centre_lps)
        anterior = xy(geom.disc_centre_lps - 30.0 * geom.posterior_lps)
        draw.line([(x, y), anterior], fill=(255, 255, 0), width=1)
        draw.text((anterior[0] - 40, anterior[1] - 6), geom.level, fill=(255, 255, 0))
        for m in measurements.get(geom.level, []):
            a, b = (xy(np.asarray(p)) for p in m["points_lps"])
            draw.line([a, b], fill=(0, 255, 255), width=1)
    if title:
        draw.text((4, 4), title, fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
