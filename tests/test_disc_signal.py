"""Signal ratios of a disc and its endplates (models.discs.signal) on a real T2 slice with
its expert masks: present where the tissues are, and moving the way the grades they stand
for move when the nucleus or an endplate band changes signal."""

from __future__ import annotations

import numpy as np
import pytest

from models.discs.signal import N_SIGNAL, SIGNAL_FEATURES, level_signal
from models.levels import label_levels
from models.realdata.midsag import midsag_volume
from models.realdata.spider import load_t2space

NUCLEUS_CSF = SIGNAL_FEATURES.index("nucleus_over_csf")
NUCLEUS_MARROW = SIGNAL_FEATURES.index("nucleus_over_marrow")
LOWER_ENDPLATE = SIGNAL_FEATURES.index("lower_endplate_over_marrow")


@pytest.fixture(scope="module")
def slice_and_labels() -> tuple[np.ndarray, np.ndarray]:
    data = load_t2space("50")
    k = data.images.shape[0] // 2
    return data.images[k].astype(np.float32), data.labels[k]


def _signal(image: np.ndarray, semantic: np.ndarray) -> tuple[dict, object]:
    volume = midsag_volume(image, 0.94, 0.94, "p50")
    labelling = label_levels(volume, semantic[None])
    return level_signal(volume, semantic[None], labelling), labelling


def test_lumbar_discs_get_every_ratio_on_real_t2(slice_and_labels):
    image, semantic = slice_and_labels
    signal, _ = _signal(image, semantic)
    lumbar = [lv for lv in ("L1-L2", "L2-L3", "L3-L4", "L4-L5") if lv in signal]
    assert len(lumbar) >= 3
    for level in lumbar:
        values, present = signal[level]
        assert values.shape == present.shape == (N_SIGNAL,)
        assert present.all(), (level, present)
        assert np.all(np.isfinite(values))
        # on T2 the disc is never brighter than the fluid of the canal next to it
        assert values[NUCLEUS_CSF] < 0.3, (level, values)


def test_ratios_follow_the_tissue_they_measure(slice_and_labels):
    image, semantic = slice_and_labels
    base, labelling = _signal(image, semantic)
    level = "L3-L4"
    disc = labelling.instances[level].mask[0]
    brighter = image.copy()
    brighter[disc] *= 1.5
    lifted, _ = _signal(brighter, semantic)
    assert lifted[level][0][NUCLEUS_CSF] > base[level][0][NUCLEUS_CSF] + 0.2
    assert lifted[level][0][NUCLEUS_MARROW] > base[level][0][NUCLEUS_MARROW] + 0.2
    # darken the marrow right below the disc (a Modic-like band in L4's upper endplate)
    from scipy import ndimage

    body = labelling.instances["L4"].mask[0]
    band = body & (ndimage.distance_transform_edt(~disc) * 0.94 <= 4.0)
    assert band.sum() > 10
    darker = image.copy()
    darker[band] *= 0.4
    dark, _ = _signal(darker, semantic)
    assert dark[level][0][LOWER_ENDPLATE] < base[level][0][LOWER_ENDPLATE] - 0.3


def test_a_missing_canal_makes_its_ratio_absent_not_zero(slice_and_labels):
    image, semantic = slice_and_labels
    no_canal = np.where(semantic == 3, 0, semantic).astype(np.uint8)
    signal, _ = _signal(image, no_canal)
    for values, present in signal.values():
        assert present[NUCLEUS_CSF] == 0 and values[NUCLEUS_CSF] == 0
