"""``preview.png``: mid-sagittal T1 and T2 and one axial slice with label outlines.

A quick look tells whether a study is anatomically plausible and whether the labels sit on
the structures they name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lumbar_common.vocabulary import SPIDER_CANAL, SPIDER_DISC_OFFSET

from .series import SeriesPlan

_HEIGHT = 384


def _gray(img: np.ndarray) -> np.ndarray:
    top = float(np.percentile(img, 99.5)) or 1.0
    return (np.clip(img / top, 0.0, 1.0) * 255).astype(np.uint8)


def _outline(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, bool)
    for axis in (0, 1):
        for shift in (1, -1):
            edge |= labels != np.roll(labels, shift, axis=axis)
    edge &= labels > 0
    colours = {
        "vertebra": ((labels > 0) & (labels < SPIDER_CANAL)) | (
            (labels > SPIDER_CANAL) & (labels < SPIDER_DISC_OFFSET)),
        "disc": labels > SPIDER_DISC_OFFSET,
        "canal": labels == SPIDER_CANAL,
    }
    rgb = rgb.copy()
    for name, mask in colours.items():
        colour = {"vertebra": (60, 220, 60), "disc": (60, 200, 255), "canal": (255, 220, 40)}[name]
        rgb[edge & mask] = colour
    return rgb


def _panel(img: np.ndarray, labels: np.ndarray | None) -> Image.Image:
    g = _gray(img)
    rgb = np.repeat(g[..., None], 3, axis=2)
    if labels is not None:
        rgb = _outline(rgb, labels)
    pil = Image.fromarray(rgb)
    w = int(round(pil.width * _HEIGHT / pil.height))
    return pil.resize((w, _HEIGHT), Image.Resampling.BILINEAR)


def write_preview(path: Path, sag_images: dict[str, np.ndarray], sag_labels: np.ndarray,
                  ax: SeriesPlan, ax_images: dict[str, np.ndarray] | None,
                  ax_labels: np.ndarray | None) -> None:
    mid = sag_labels.shape[0] // 2
    order = [w for w in ("T1", "T2", "STIR") if w in sag_images]
    panels = [_panel(sag_images[w][mid], sag_labels[mid]) for w in order]
    if ax_images is not None and ax_labels is not None:
        idx = [i for i, lv in enumerate(ax.slice_levels) if lv == "L4-L5"]
        k = idx[len(idx) // 2] if idx else len(ax.slices) // 2
        panels.append(_panel(ax_images["T2"][k], ax_labels[k]))
    width = sum(p.width for p in panels)
    sheet = Image.new("RGB", (width, _HEIGHT))
    x = 0
    for p in panels:
        sheet.paste(p, (x, 0))
        x += p.width
    sheet.save(path)
