"""Training samples (one per disc level) built from synthetic studies.

A sample holds the five crops of a level plus its grades. Geometry is taken the way the
pipeline takes it (disc centre and axes, canal centre from the canal label) and can be
jittered by a few millimetres and degrees so the network tolerates the error of the real
level finder. Generated studies and their crops are cached outside the repository: the
expensive part is writing the study, not cropping it.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from lumbar_common.vocabulary import (
    CANAL,
    FORAMEN,
    GRADES,
    LEVELS,
    SIDES,
    SUBARTICULAR,
    finding_keys,
    rsna_key,
)
from models.grading import image_measures as im
from models.grading.roi import (
    AXIAL_OFFSETS_MM,
    AXIAL_PX,
    CANAL_OFFSETS_MM,
    CANAL_PX,
    FORAMEN_OFFSETS_MM,
    FORAMEN_PX,
    canal_crop,
    foramen_crop,
    subarticular_crop,
)
from models.study import LevelGeometry, StudyAnatomy

#: array name -> shape of one sample's crop
CROP_SHAPES: dict[str, tuple[int, ...]] = {
    "canal": (len(CANAL_OFFSETS_MM), CANAL_PX, CANAL_PX),
    "for_l": (len(FORAMEN_OFFSETS_MM), FORAMEN_PX, FORAMEN_PX),
    "for_r": (len(FORAMEN_OFFSETS_MM), FORAMEN_PX, FORAMEN_PX),
    "ax_l": (len(AXIAL_OFFSETS_MM), AXIAL_PX, AXIAL_PX),
    "ax_r": (len(AXIAL_OFFSETS_MM), AXIAL_PX, AXIAL_PX),
}
#: a crop with less of it inside the series than this counts as missing
MIN_COVERAGE = 0.5
#: grade mix of enriched training studies: at natural prevalence a study has only two or
#: three abnormal findings, so most of the (slow to generate) pixels would teach "normal"
ENRICHED_MIX: tuple[float, float, float] = (0.45, 0.30, 0.25)


def enriched_grades(seed: int) -> dict[str, str]:
    """Deterministic per-seed grades with Moderate and Severe over-represented.

    The network then sees enough abnormal anatomy; the shift in class prior is undone at
    calibration time on validation studies drawn at natural prevalence.
    """
    rng = np.random.default_rng([seed, 7])
    keys = [rsna_key(c, s, lv) for c, s, lv in finding_keys()]
    draws = rng.choice(len(GRADES), size=len(keys), p=ENRICHED_MIX)
    return {k: GRADES[int(g)] for k, g in zip(keys, draws, strict=True)}


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    return (v * np.cos(angle) + np.cross(axis, v) * np.sin(angle)
            + axis * np.dot(axis, v) * (1 - np.cos(angle)))


def jitter_level(level: LevelGeometry, rng: np.random.Generator, shift_mm: float = 1.5,
                 angle_deg: float = 4.0) -> LevelGeometry:
    """The level as an imperfect level finder might report it."""
    shift = rng.normal(0, shift_mm, 3)
    axis = rng.normal(0, 1, 3)
    angle = np.radians(rng.normal(0, angle_deg))
    cranial = _rotate(np.asarray(level.cranial_lps), axis, angle)
    post = _rotate(np.asarray(level.posterior_lps), axis, angle)
    post = post - np.dot(post, cranial) * cranial
    return replace(level, disc_centre_lps=np.asarray(level.disc_centre_lps) + shift,
                   cranial_lps=cranial / np.linalg.norm(cranial),
                   posterior_lps=post / np.linalg.norm(post),
                   canal_centre_lps=np.asarray(level.canal_centre_lps) + shift)


#: scalar measurements given to the joint head beside the crops (see ``level_inputs``)
N_FEATURES = 6


def _canal_ap(anatomy: StudyAnatomy, level: LevelGeometry) -> float | None:
    for m in anatomy.measurements.get(level.level, []):
        if m.get("name") == "canal_ap_diameter":
            return float(m["value"])
    found = im.canal_ap_from_labels(anatomy, level)
    return None if found is None else float(found["value"])


def level_inputs(anatomy: StudyAnatomy, level: LevelGeometry) -> dict[str, np.ndarray]:
    """The five crops of one level, presence flags [sag T1, axial T2] and ``feats``.

    ``feats`` are the explainable grader's measurements, scaled to ~0..1 (canal AP / 20 mm,
    its presence flag, foraminal fat fractions L/R, recess patencies L/R), so the network can
    lean on a measured number where its own view is ambiguous.
    """
    out: dict[str, np.ndarray] = {}
    crop = canal_crop(anatomy, level)
    if crop is None:
        raise ValueError(f"{level.level}: no sagittal T2/STIR to grade the canal from")
    out["canal"] = crop.array
    feats = np.zeros(N_FEATURES, np.float32)
    ap = _canal_ap(anatomy, level)
    if ap is not None:
        feats[0], feats[1] = ap / 20.0, 1.0
    t1_ok = ax_ok = True
    for i, (side, key) in enumerate(zip(SIDES, ("for_l", "for_r"), strict=True)):
        c = foramen_crop(anatomy, level, side)
        t1_ok &= c is not None and c.coverage >= MIN_COVERAGE
        out[key] = c.array if c is not None else np.zeros(CROP_SHAPES[key], np.float32)
        if c is not None:
            feats[2 + i] = im.foraminal_fat_fraction(c)
    for i, (side, key) in enumerate(zip(SIDES, ("ax_l", "ax_r"), strict=True)):
        c = subarticular_crop(anatomy, level, side)
        ax_ok &= c is not None and c.coverage >= MIN_COVERAGE
        out[key] = c.array if c is not None else np.zeros(CROP_SHAPES[key], np.float32)
        if c is not None:
            feats[4 + i] = im.recess_patency(c)
    out["presence"] = np.array([float(t1_ok), float(ax_ok)], np.float32)
    if not t1_ok:
        feats[2:4] = 0.0
    if not ax_ok:
        feats[4:6] = 0.0
    out["feats"] = feats
    return out


def level_targets(truth: dict, level: str) -> tuple[np.ndarray, np.ndarray]:
    """RSNA grade indices [canal, for L, for R, sub L, sub R] and LSS grades [L, R]."""
    rsna = truth["rsna"]
    keys = [rsna_key(CANAL, None, level)] + [rsna_key(FORAMEN, s, level) for s in SIDES] + [
        rsna_key(SUBARTICULAR, s, level) for s in SIDES]
    y = np.array([GRADES.index(rsna[k]) for k in keys], np.int64)
    lss = truth["levels"][level].get("lss_foraminal_grade", {})
    y_lss = np.array([int(lss.get(s, -1)) for s in SIDES], np.int64)
    return y, y_lss


def study_samples(study_dir: Path, rng: np.random.Generator | None = None,
                  copies: int = 1) -> dict[str, np.ndarray]:
    """Stacked samples of every level of one study (``copies`` geometry draws each;
    the first exact, later ones jittered)."""
    from models.grading.synthetic import load_synthetic

    anatomy, truth = load_synthetic(study_dir)
    rng = rng or np.random.default_rng(0)
    rows: dict[str, list[np.ndarray]] = {}
    for level in anatomy.levels:
        for copy in range(copies):
            geom = level if copy == 0 else jitter_level(level, rng)
            x = level_inputs(anatomy, geom)
            y, y_lss = level_targets(truth, level.level)
            x.update(y=y, y_lss=y_lss, level=np.int64(LEVELS.index(level.level)))
            for k, v in x.items():
                rows.setdefault(k, []).append(np.asarray(v))
    return {k: np.stack(v) for k, v in rows.items()}


def build_cache(cache_dir: Path, seeds: list[int], copies: int = 2,
                keep_studies: bool = True, enrich: bool = False) -> list[Path]:
    """Generate each seed's study (if not cached), crop it, store ``<seed>.npz``.

    Studies are kept by default so a change of crop geometry only re-crops them.
    """
    from models.synth import generate_study

    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        out = cache_dir / f"{seed}.npz"
        if not out.exists():
            study = cache_dir / f"study_{seed}"
            if not (study / "truth.json").exists():
                generate_study(study, seed, grades=enriched_grades(seed) if enrich else None)
            samples = study_samples(study, np.random.default_rng(seed), copies)
            np.savez_compressed(out, **samples)
            if not keep_studies:
                shutil.rmtree(study, ignore_errors=True)
        paths.append(out)
    return paths


def load_cache(paths: list[Path]) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for p in paths:
        with np.load(p) as npz:
            for k in npz.files:
                parts.setdefault(k, []).append(npz[k])
    if not parts:
        raise ValueError("no cached samples to load")
    return {k: np.concatenate(v) for k, v in parts.items()}
