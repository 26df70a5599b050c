"""``truth.json``: what the generator put into the study, in the contract's words."""

from __future__ import annotations

from typing import Any

import numpy as np

from lumbar_common.vocabulary import (
    CANAL,
    FORAMEN,
    LEVELS,
    SIDES,
    SUBARTICULAR,
    finding_keys,
    rsna_key,
    spider_disc_label,
    spider_vertebra_label,
)

from .anatomy import Anatomy, foramen_centre, subarticular_centre
from .dicomio import StudyInfo
from .pathology import CANAL_NORMAL_MIN_MM, CANAL_SEVERE_MAX_MM
from .writer import SeriesRecord

SCHEMA = "lumbar-node/truth/1"
GENERATOR_VERSION = "1"


def _pt(p: np.ndarray) -> list[float]:
    return [round(float(x), 3) for x in p]


def levels_truth(anatomy: Anatomy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sw, sa = anatomy.sac_half_width, anatomy.sac_half_ap
    for level in LEVELS:
        disc = anatomy.disc(level)
        path = disc.pathology
        assert path is not None
        sides = {"left": 1.0, "right": -1.0}
        grades = {CANAL: anatomy.grades[rsna_key(CANAL, None, level)]}
        for side in SIDES:
            for cond in (FORAMEN, SUBARTICULAR):
                grades[f"{side}_{cond}"] = anatomy.grades[rsna_key(cond, side, level)]
        s = anatomy.canal.project(disc.centre)
        out[level] = {
            "disc_centre_lps": _pt(disc.centre),
            "disc_normal_lps": _pt(disc.normal),
            "disc_label": spider_disc_label(level),
            "canal_centre_lps": _pt(anatomy.canal.point(s)),
            "canal_ap_mm": round(anatomy.canal_ap_at(s), 2),
            "disc_height_anterior_mm": round(disc.height_anterior, 2),
            "disc_height_posterior_mm": round(disc.height_posterior, 2),
            "disc_depth_mm": round(2 * disc.ry, 2),
            "disc_degeneration": round(path.degeneration, 3),
            "foramen_centre_lps": {k: _pt(foramen_centre(disc, v, sw)) for k, v in sides.items()},
            "subarticular_centre_lps": {
                k: _pt(subarticular_centre(disc, v, sw, sa)) for k, v in sides.items()},
            "lateral_recess_encroachment": {k: round(path.recess[k], 3) for k in SIDES},
            "lss_foraminal_grade": dict(path.lss),
            "grades": grades,
        }
    return out


def vertebrae_truth(anatomy: Anatomy, partial: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for vert in anatomy.vertebrae:
        if vert.kind == "sacral" and vert.name != "S1":
            continue
        out[vert.name] = {
            "centre_lps": _pt(vert.centre),
            "body_height_mm": round(vert.height, 2),
            "label": spider_vertebra_label(vert.name),
            "lumbar_type": vert.kind == "lumbar",
            "partial_in_sagittal": vert.name in partial,
            "modic": {"lower": vert.modic[0], "upper": vert.modic[1]},
            "marrow_lesions": len(vert.lesions),
        }
    return out


def build_truth(
    *,
    seed: int,
    info: StudyInfo,
    anatomy: Anatomy | None,
    records: list[SeriesRecord],
    variants: list[str],
    corrupt_files: list[str],
    partial: list[str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    truth: dict[str, Any] = {
        "schema": SCHEMA,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "study_instance_uid": info.study_uid,
        "frame_of_reference_uid": info.frame_of_reference_uid,
        "patient": {"id": info.patient_id, "name": info.patient_name},
        "vendor": info.vendor.key,
        "manufacturer": info.vendor.manufacturer,
        "magnetic_field_strength": info.field_strength,
        "body_part": info.body_part,
        "variants": list(variants),
        "transitional_anatomy": bool(anatomy and anatomy.transitional),
        "lumbar_vertebrae": (6 if anatomy.transitional else 5) if anatomy else 0,
        "canal_thresholds_mm": {"normal_mild_min": CANAL_NORMAL_MIN_MM,
                                "severe_below": CANAL_SEVERE_MAX_MM},
        "series": {},
        "corrupt_files": list(corrupt_files),
        "rsna": {},
        "levels": {},
        "vertebrae": {},
    }
    for rec in records:
        entry: dict[str, Any] = {
            "series_instance_uid": rec.series_instance_uid,
            "role": rec.role,
            "series_number": rec.series_number,
            "series_description": rec.description,
            "files": rec.files,
            "sop_instance_uids": rec.sop_instance_uids,
        }
        for key in ("label_file", "axial_mode", "slice_levels", "weighting"):
            if key in rec.extra:
                entry[key] = rec.extra[key]
        truth["series"][rec.key] = entry
    if anatomy is not None:
        truth["rsna"] = {rsna_key(*k): anatomy.grades[rsna_key(*k)] for k in finding_keys()}
        truth["levels"] = levels_truth(anatomy)
        truth["vertebrae"] = vertebrae_truth(anatomy, partial)
        if anatomy.transitional:
            truth["transitional_note"] = (
                "six lumbar-type vertebrae; named counting up from the sacrum, so the sixth "
                "(without ribs) is T12")
    truth.update(extra)
    return truth
