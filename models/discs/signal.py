"""Signal-intensity features of a disc and its endplates, read from the node's own masks.

Pfirrmann grading is, by its definition, a judgement of the nucleus's T2 signal against the
cerebrospinal fluid (bright, grades 1-2) and against the marrow (grey, grade 3; dark,
grades 4-5); Modic types are the marrow next to an endplate turning dark or bright on T1
and T2 against the marrow of the same vertebra's centre. A few hundred crops cannot teach a
network to find those reference tissues reliably, but the segmentation already names them:
these ratios hand the classifier the very comparisons a radiologist makes.

Every value is a log ratio of medians on the slice nearest the disc centre, so it does not
depend on the scanner's grey-value scale (the PNGs are min-max scaled per image). A value
whose tissue is missing on that slice is absent (mask 0), never guessed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from models.levels import CANAL, LevelLabelling
from models.study import Volume

#: features per sequence, in this order
SIGNAL_FEATURES: tuple[str, ...] = (
    "nucleus_over_csf", "nucleus_over_marrow", "nucleus_spread",
    "upper_endplate_over_marrow", "lower_endplate_over_marrow")
N_SIGNAL = len(SIGNAL_FEATURES)
#: the marrow band next to an endplate where Modic change lies, in mm from the disc
ENDPLATE_BAND_MM = 4.0
#: canal pixels within this distance along the spine from the disc centre count as its CSF
CSF_REACH_MM = 12.0
#: fewer pixels than this make a tissue's median absent
MIN_PIXELS = 6
#: floor of a median relative to the slice's 99th percentile, so a log ratio stays finite
FLOOR = 0.02


def _median(image: np.ndarray, mask: np.ndarray) -> float:
    return float(np.median(image[mask])) if int(mask.sum()) >= MIN_PIXELS else float("nan")


def _log_ratio(a: float, b: float, floor: float) -> float:
    if not (np.isfinite(a) and np.isfinite(b)):
        return float("nan")
    return float(np.log(max(a, floor) / max(b, floor)))


def level_signal(volume: Volume, semantic: np.ndarray, labelling: LevelLabelling
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per disc level: (values [N_SIGNAL] with 0 where absent, present mask [N_SIGNAL])."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    spacing = volume.spacing
    for geom in labelling.levels:
        values = np.full(N_SIGNAL, np.nan, np.float64)
        disc = labelling.instances.get(geom.level)
        if disc is not None:
            k = int(np.clip(np.rint(volume.lps_to_index(geom.disc_centre_lps)[0]), 0,
                            volume.array.shape[0] - 1))
            values = _on_slice(volume, semantic, labelling, geom.level, k, spacing)
        present = np.isfinite(values)
        out[geom.level] = (np.where(present, values, 0.0).astype(np.float32),
                           present.astype(np.float32))
    return out


def _on_slice(volume: Volume, semantic: np.ndarray, labelling: LevelLabelling, level: str,
              k: int, spacing: np.ndarray) -> np.ndarray:
    image = np.asarray(volume.array[k], np.float64)
    floor = FLOOR * max(float(np.percentile(image, 99.0)), 1e-6)
    pixel_mm = float(np.mean(spacing[1:]))
    disc = labelling.instances[level].mask[k]
    upper_name, lower_name = level.split("-")
    upper = labelling.instances.get(upper_name)
    lower = labelling.instances.get(lower_name)
    # the nucleus: the disc's inner half (farthest from its outline), where Pfirrmann looks
    depth = ndimage.distance_transform_edt(disc)
    nucleus = disc & (depth >= 0.5 * depth.max()) if disc.any() else disc
    n_signal = _median(image, nucleus)
    # CSF: the canal near this disc along the spine's long axis
    canal = semantic[k] == CANAL
    if canal.any():
        rr, cc = np.nonzero(canal)
        centre = np.argwhere(disc).mean(axis=0) if disc.any() else np.array([np.nan, np.nan])
        near = np.abs(rr - centre[0]) * spacing[1] <= CSF_REACH_MM
        csf_mask = np.zeros_like(canal)
        csf_mask[rr[near], cc[near]] = True
    else:
        csf_mask = canal
    csf = _median(image, csf_mask)
    band_px = ENDPLATE_BAND_MM / max(pixel_mm, 1e-6)
    from_disc = ndimage.distance_transform_edt(~disc) if disc.any() else None
    values = [_log_ratio(n_signal, csf, floor), float("nan"), float("nan"),
              float("nan"), float("nan")]
    marrows = []
    for slot, body in ((3, upper), (4, lower)):
        if body is None or from_disc is None:
            continue
        m = body.mask[k]
        band = m & (from_disc <= band_px)
        core = m & (from_disc > 2.5 * band_px)
        marrow = _median(image, core)
        marrows.append(marrow)
        values[slot] = _log_ratio(_median(image, band), marrow, floor)
    marrow_ref = float(np.nanmedian(marrows)) if marrows and np.isfinite(marrows).any() \
        else float("nan")
    values[1] = _log_ratio(n_signal, marrow_ref, floor)
    if int(nucleus.sum()) >= MIN_PIXELS and np.isfinite(n_signal):
        q25, q75 = np.percentile(image[nucleus], [25.0, 75.0])
        values[2] = float((q75 - q25) / max(n_signal, floor))
    return np.asarray(values, np.float64)
