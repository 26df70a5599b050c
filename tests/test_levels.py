"""Level labelling on spine phantoms whose anatomy is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lumbar_common.vocabulary import (
    LEVELS,
    SPIDER_SACRUM,
    VERTEBRAE,
    spider_disc_label,
    spider_vertebra_label,
)
from models.levels import (
    DISCS_FROM_SACRUM,
    VERTEBRAE_FROM_SACRUM,
    disc_label,
    label_levels,
    structure_name,
    vertebra_label,
)
from models.study import Volume

BODY_H, DISC_H, DEPTH = 24.0, 9.0, 34.0


def phantom(n_lumbar: int = 5, n_above: int = 2, sacrum: bool = True, l5s1_height: float = DISC_H,
            sacral_tilt_deg: float = 35.0, posterior_elements: bool = True,
            lumbar_type_t12: bool = False, extra_rows: int = 0):
    """Sagittal semantic mask of a lordotic spine, and the disc centres by name (LPS)."""
    # slices along x (3 mm), rows S->I (1 mm), cols A->P (1 mm); extra rows extend it upwards
    shape = (9, 240 + extra_rows, 130)
    affine = np.eye(4)
    affine[:3, 0] = [-3.0, 0.0, 0.0]
    affine[:3, 1] = [0.0, 0.0, -1.0]
    affine[:3, 2] = [0.0, 1.0, 0.0]
    affine[:3, 3] = [12.0, -66.0, 110.0 + extra_rows]
    vol = Volume("sag_t2", "1.2.3", np.zeros(shape, np.float32), affine, tuple("x" * shape[0]))
    idx = np.indices(shape).reshape(3, -1).T
    pts = vol.index_to_lps(idx)
    mask = np.zeros(len(pts), np.uint8)
    names_v = ["L5", "L4", "L3", "L2", "L1", *(f"T{n}" for n in range(12, 0, -1))]
    if n_lumbar == 6:
        names_v = ["L6", *names_v]
    # build from the sacrum upwards: each segment rotates the local frame by a few degrees
    centre = np.array([0.0, 18.0, -100.0])
    up = np.array([0.0, -math.sin(math.radians(sacral_tilt_deg)),
                   math.cos(math.radians(sacral_tilt_deg))])
    truth: dict[str, np.ndarray] = {}

    def box(c, u, h, d, w, value, shift=0.0):
        post = np.cross(u, [1.0, 0.0, 0.0])
        post = post if post[1] > 0 else -post
        rel = pts - c
        inside = (np.abs(rel @ u) <= h / 2) & (np.abs(rel @ post - shift) <= d / 2) & (
            np.abs(rel[:, 0]) <= w / 2)
        mask[inside] = value
        return post

    if sacrum:
        box(centre - up * 30, up, 60, DEPTH + 6, 40, 1)
    top = centre
    heights = [l5s1_height] + [DISC_H] * (n_lumbar + n_above)
    for k in range(n_lumbar + n_above):
        disc_c = top + up * heights[k] / 2
        post = box(disc_c, up, heights[k], DEPTH, 36, 2)
        truth[f"disc{k}"] = disc_c
        up = np.array([0.0, up[1] + 0.09, up[2]])
        up /= np.linalg.norm(up)
        # thoracic bodies are smaller than lumbar ones, unless T12 is lumbar-type
        thoracic = k >= n_lumbar + (1 if lumbar_type_t12 else 0)
        body_h, depth = (0.88 * BODY_H, 0.9 * DEPTH) if thoracic else (BODY_H, DEPTH)
        body_c = disc_c + up * (heights[k] / 2 + body_h / 2)
        box(body_c, up, body_h, depth, 36, 1)
        if posterior_elements:  # arch behind the canal, touching the next arch
            box(body_c, up, BODY_H + heights[k] + 1, 12, 20, 1, shift=DEPTH / 2 + 22)
        box(body_c, up, BODY_H + DISC_H + 1, 13, 14, 3, shift=DEPTH / 2 + 8)
        top = body_c + up * body_h / 2
        del post
    return vol, mask.reshape(shape), truth, names_v


def _disc_names_from_sacrum(n):
    return ["L5-S1", "L4-L5", "L3-L4", "L2-L3", "L1-L2", "T12-L1", "T11-T12"][:n]


def test_normal_spine_named_from_sacrum():
    vol, sem, truth, _ = phantom()
    out = label_levels(vol, sem)
    assert out.anchor == "sacrum" and not out.ambiguous, out.warnings
    assert [g.level for g in out.levels] == list(LEVELS)
    for k, name in enumerate(_disc_names_from_sacrum(5)):
        geom = next(g for g in out.levels if g.level == name)
        assert np.linalg.norm(geom.disc_centre_lps - truth[f"disc{k}"]) < 1.5, name
        assert np.isclose(np.linalg.norm(geom.cranial_lps), 1.0)
        assert geom.cranial_lps[2] > 0.5 and geom.posterior_lps[1] > 0.5
        assert abs(geom.cranial_lps @ geom.posterior_lps) < 1e-6
        assert (geom.canal_centre_lps - geom.disc_centre_lps) @ geom.posterior_lps > 15
    assert (out.labels == SPIDER_SACRUM).any()
    for level in LEVELS:
        assert (out.labels == spider_disc_label(level)).any()
    # posterior arches touch each other: every vertebra still gets its own label
    for name, value in [("L5", 1), ("L4", 2), ("L1", 5), ("T12", 6)]:
        assert out.instances[name].label == value
    l5 = out.instances["L5"].centre_lps
    assert l5[2] < out.instances["L4"].centre_lps[2]


def test_structures_above_l1_are_named_up_to_the_top_of_the_view():
    """T12 … T8 and their discs get names and labels so that the SEG can show the whole
    count; the graded levels stay the five lumbar ones."""
    vol, sem, truth, _ = phantom(n_above=5, extra_rows=180)
    out = label_levels(vol, sem)
    assert out.anchor == "sacrum" and not out.ambiguous, out.warnings
    assert [g.level for g in out.levels] == list(LEVELS)
    discs = ["L5-S1", "L4-L5", "L3-L4", "L2-L3", "L1-L2", "T12-L1", "T11-T12", "T10-T11",
             "T9-T10", "T8-T9"]
    for k, name in enumerate(discs):
        inst = out.instances[name]
        assert inst.kind == "disc" and inst.label == 201 + k, name
        assert np.linalg.norm(inst.centre_lps - truth[f"disc{k}"]) < 1.5, name
        assert (out.labels == inst.label).any()
    for k, name in enumerate(["L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9"]):
        assert out.instances[name].label == k + 1, name
    # the vertebra above the highest disc is cut by the top of the view
    assert out.instances["T8"].label in (10, 110)
    assert structure_name(210) == ("T8-T9", "disc", False)
    assert structure_name(110) == ("T8", "vertebra", True)
    with pytest.raises(ValueError, match="unknown label"):
        structure_name(240)


def test_names_extend_the_spider_scheme():
    for name in VERTEBRAE_FROM_SACRUM[:9]:
        assert vertebra_label(name) == spider_vertebra_label(name)
    for level in DISCS_FROM_SACRUM[:9]:
        assert disc_label(level) == spider_disc_label(level)
    assert vertebra_label("T1") == 17 and disc_label("T1-T2") == 217
    assert DISCS_FROM_SACRUM[5:7] == ("T12-L1", "T11-T12")


def test_sacrum_not_in_view_is_flagged():
    vol, sem, _, _ = phantom(sacrum=False, sacral_tilt_deg=5.0)
    out = label_levels(vol, sem)
    assert out.ambiguous and "sacrum not" in out.anchor
    assert any("sacrum not identified" in w for w in out.warnings)


def test_rudimentary_lowest_disc_flags_transitional_anatomy():
    vol, sem, _, _ = phantom(l5s1_height=3.0)
    out = label_levels(vol, sem)
    assert out.ambiguous
    assert any("transitional" in w for w in out.warnings)


def test_lumbar_type_t12_flags_six_lumbar_vertebrae():
    vol, sem, _, _ = phantom(lumbar_type_t12=True)
    out = label_levels(vol, sem)
    assert out.ambiguous and out.anchor == "sacrum"
    assert any("six lumbar-type" in w for w in out.warnings)
    # still named from the sacrum, and says so
    assert [g.level for g in out.levels] == list(LEVELS)


def test_short_field_of_view_flagged():
    vol, sem, _, _ = phantom(n_lumbar=3, n_above=0)
    out = label_levels(vol, sem)
    assert out.ambiguous
    assert [g.level for g in out.levels] == ["L3-L4", "L4-L5", "L5-S1"]
    assert any("only 3 discs" in w for w in out.warnings)


def test_bad_masks_are_named():
    vol, sem, _, _ = phantom()
    with pytest.raises(ValueError, match="shape"):
        label_levels(vol, sem[:, :10])
    bad = sem.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"\[7\]"):
        label_levels(vol, bad)
    empty = label_levels(vol, np.zeros_like(sem))
    assert empty.ambiguous and not empty.levels


# --- on synthetic studies ------------------------------------------------------------------


@pytest.mark.parametrize("variants", [[], ["transitional"]])
def test_synthetic_levels_match_reference_labels(synth_study, variants):
    from synth_truth import labels_for, series_files, truth

    from models.levels import semantic_from_labels
    from models.volume import load_volume

    study = synth_study(seed=8 if variants else 3, variants=variants, matrix=128)
    t = truth(study)
    volume = load_volume(series_files(study, "sag_t2"), "sag_t2")
    reference = labels_for(study, volume)
    out = label_levels(volume, semantic_from_labels(reference))
    assert out.anchor == "sacrum"
    assert [g.level for g in out.levels] == list(LEVELS)
    for g in out.levels:
        ref = np.array(t["levels"][g.level]["disc_centre_lps"])
        assert np.linalg.norm(g.disc_centre_lps - ref) < 3.0, g.level
    # every lumbar vertebra, disc and the sacrum overlaps the reference instance of its name
    # (the vertebra above the highest disc may hold fragments of the next one: no disc
    # separates them in the field of view)
    for name in (*VERTEBRAE, *LEVELS):
        inst = out.instances[name]
        values, counts = np.unique(reference[inst.mask], return_counts=True)
        assert values[np.argmax(counts)] == inst.label, name
        assert counts.max() / counts.sum() > 0.85, name
    # transitional anatomy: six lumbar-type vertebrae are reported, not guessed away
    assert out.ambiguous == t["transitional_anatomy"], out.warnings
    if t["transitional_anatomy"]:
        assert any("six lumbar-type" in w for w in out.warnings)


def test_missing_disc_in_segmentation_is_flagged():
    vol, sem, _, _ = phantom()
    out = label_levels(vol, sem)
    l3l4 = out.instances["L3-L4"].mask
    damaged = sem.copy()
    damaged[l3l4] = 1  # the network called the L3-L4 disc bone
    flagged = label_levels(vol, damaged)
    assert flagged.ambiguous
    assert any("disc may be missing" in w for w in flagged.warnings)


def test_specks_of_a_noisy_segmentation_do_not_shift_names():
    vol, sem, truth_centres, _ = phantom()
    rng = np.random.default_rng(1)
    noisy = sem.copy()
    specks = rng.random(sem.shape) < 0.003
    noisy[specks] = rng.integers(1, 4, int(specks.sum()))
    out = label_levels(vol, noisy)
    assert [g.level for g in out.levels] == list(LEVELS)
    assert any("small disc fragment" in w for w in out.warnings)
    l5s1 = next(g for g in out.levels if g.level == "L5-S1")
    assert np.linalg.norm(l5s1.disc_centre_lps - truth_centres["disc0"]) < 2.0
