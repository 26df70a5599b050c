"""Tissue signal per weighting, texture, coil bias and Rician noise.

Relative intensities follow spine MR at 1.5-3 T: on T1 fat and marrow are bright and CSF
dark; on fast spin-echo T2 CSF and a healthy nucleus are bright and fat stays fairly bright;
STIR nulls fat, so marrow goes dark and fluid is the brightest thing in the image. The
posterior spine coil makes the back brighter than the abdomen.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

from .tissues import (
    AIR,
    ARCH,
    CORTEX,
    CSF,
    DISC_BASE,
    EPIFAT,
    FAT,
    FATTY,
    LIGAMENT,
    MARROW,
    MUSCLE,
    N_TISSUES,
    NERVE,
    OEDEMA,
    SKIN,
    VESSEL,
    VISCERA,
)

#: tissue -> (T1, T2, STIR)
_BASE = {
    AIR: (0.0, 0.0, 0.0),
    FAT: (0.95, 0.74, 0.06),
    EPIFAT: (0.90, 0.70, 0.07),
    SKIN: (0.55, 0.42, 0.22),
    MUSCLE: (0.33, 0.19, 0.17),
    VISCERA: (0.34, 0.18, 0.26),
    MARROW: (0.68, 0.52, 0.12),
    ARCH: (0.50, 0.28, 0.10),
    OEDEMA: (0.32, 0.72, 0.70),
    FATTY: (0.92, 0.70, 0.08),
    CORTEX: (0.05, 0.04, 0.03),
    CSF: (0.12, 1.00, 1.00),
    NERVE: (0.30, 0.26, 0.32),
    LIGAMENT: (0.09, 0.07, 0.06),
    VESSEL: (0.05, 0.05, 0.05),
}
_WEIGHTING = {"T1": 0, "T2": 1, "STIR": 2}
#: multiplicative texture amplitude per tissue
_TEXTURE = {MARROW: 0.14, ARCH: 0.14, VISCERA: 0.35, MUSCLE: 0.12, FAT: 0.06, EPIFAT: 0.05,
            SKIN: 0.1}


def tissue_table(weighting: str, degenerations: list[float], rng: np.random.Generator
                 ) -> np.ndarray:
    """Signal of every tissue id for one series; discs darken on T2/STIR as they degenerate."""
    if weighting not in _WEIGHTING:
        raise ValueError(f"unknown weighting {weighting!r}; expected one of {tuple(_WEIGHTING)}")
    col = _WEIGHTING[weighting]
    table = np.zeros(N_TISSUES, dtype=np.float32)
    for tissue, values in _BASE.items():
        table[tissue] = values[col] * rng.uniform(0.93, 1.07)
    for i, d in enumerate(degenerations):
        annulus = (0.30, 0.10, 0.09)[col] * rng.uniform(0.9, 1.1)
        nucleus = (0.42 - 0.12 * d, 0.85 - 0.72 * d, 0.80 - 0.62 * d)[col]
        nucleus *= rng.uniform(0.95, 1.05)
        table[DISC_BASE + 3 * i] = annulus
        table[DISC_BASE + 3 * i + 1] = 0.5 * (annulus + nucleus)
        table[DISC_BASE + 3 * i + 2] = nucleus
    return table


#: fine-grain texture amplitude per tissue
_GRAIN = {MARROW: 0.10, ARCH: 0.10, FATTY: 0.08, OEDEMA: 0.08, MUSCLE: 0.07, VISCERA: 0.12,
          FAT: 0.04, EPIFAT: 0.05}


def texture_table() -> tuple[np.ndarray, np.ndarray]:
    """(coarse, fine) multiplicative texture amplitudes per tissue."""
    amp = np.full(N_TISSUES, 0.03, dtype=np.float32)
    for tissue, a in _TEXTURE.items():
        amp[tissue] = a
    amp[AIR] = 0.0
    fine = np.full(N_TISSUES, 0.02, dtype=np.float32)
    for tissue, a in _GRAIN.items():
        fine[tissue] = a
    fine[AIR] = 0.0
    return amp, fine


class NoiseField:
    """Smooth random field fixed in patient space, so texture agrees between series."""

    def __init__(self, rng: np.random.Generator, centre: np.ndarray, half_extent: float = 220.0,
                 step: float = 3.0, sigma_vox: float = 1.3):
        n = int(2 * half_extent / step) + 1
        raw = rng.standard_normal((n, n, n)).astype(np.float32)
        field = gaussian_filter(raw, sigma_vox)
        self.field = field / (field.std() + 1e-6)
        self.origin = centre - half_extent
        self.step = step

    def sample(self, points: np.ndarray) -> np.ndarray:
        idx = [(points[..., i].ravel() - self.origin[i]) / self.step for i in range(3)]
        out = map_coordinates(self.field, idx, order=1, mode="nearest")
        return out.reshape(points.shape[:-1])


def bias_field(back_distance: np.ndarray, s: np.ndarray, s_centre: float,
               coeffs: np.ndarray) -> np.ndarray:
    """Receive-coil sensitivity: strongest at the back, falling off anteriorly and along z."""
    depth = np.clip(back_distance, 0.0, None)
    gain = 0.2 + 0.9 / np.sqrt(1.0 + (depth / coeffs[0]) ** 2)
    gain *= np.exp(-(((s - s_centre) / coeffs[1]) ** 2))
    return gain * (1.0 + coeffs[2] * np.tanh((s - s_centre) / 150.0))


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    re = signal + np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    im = np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im)
