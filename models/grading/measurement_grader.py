"""Explainable grader: one published measurement per condition, soft thresholds.

Every grade it gives can be checked with a ruler: the measurement, its unit, where it was
taken and the literature cut-offs (``thresholds.toml``) travel with the finding. It needs no
trained weights, so it is also the fallback when the learned grader lacks an input series.

Measurements:
- canal: mid-sagittal AP diameter of the canal at the disc (pipeline measurement, else from
  the canal label), with the cross-sectional area from the labels reported beside it;
- foramen: fraction of the foraminal window still filled with T1-bright perineural fat;
- subarticular: patency of the lateral recess (fluid/fat-bright fraction of a window there)
  on the axial T2 slice nearest the disc plane.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import expit

from lumbar_common.vocabulary import CANAL, FORAMEN, SUBARTICULAR, Side
from models.grading import image_measures as im
from models.grading.roi import Crop, foramen_crop, subarticular_crop
from models.study import LevelGeometry, StudyAnatomy

THRESHOLDS_PATH = Path(__file__).with_name("thresholds.toml")
NAME = "lumbar-node-measurement-grader"


@dataclass
class Grade:
    """One graded (or not assessable) finding from the measurement grader."""

    probabilities: list[float] | None
    reason: str | None = None
    measurements: list[dict] = field(default_factory=list)
    crop: Crop | None = None
    #: where the deciding measurement was taken, when no crop describes it
    roi: dict | None = None


def ordinal_probabilities(value: float, moderate: float, severe: float,
                          width: float) -> list[float]:
    """[p_nm, p_mod, p_sev] for a measurement where smaller means narrower.

    Two nested logistics (P(≥ moderate) and P(severe)) keep the probabilities ordinal:
    P(severe) never exceeds P(≥ moderate).
    """
    if not np.isfinite(value):
        raise ValueError(f"measurement must be finite, got {value!r}")
    if not severe < moderate or width <= 0:
        raise ValueError(f"need severe < moderate and width > 0, got {severe}, {moderate}, {width}")
    p_ge_mod = float(expit((moderate - value) / width))
    p_sev = float(expit((severe - value) / width))
    p_sev = min(p_sev, p_ge_mod)
    probs = np.array([1.0 - p_ge_mod, p_ge_mod - p_sev, p_sev])
    probs = np.clip(probs, 1e-4, None)
    return [float(p) for p in probs / probs.sum()]


class MeasurementGrader:
    def __init__(self, thresholds_path: Path | None = None) -> None:
        path = thresholds_path or THRESHOLDS_PATH
        with open(path, "rb") as fh:
            self.thresholds = tomllib.load(fh)
        self.version = str(self.thresholds.get("version", "0"))
        for key in ((CANAL, "ap_diameter"), (FORAMEN, "fat_fraction"),
                    (SUBARTICULAR, "recess_patency")):
            t = self.thresholds.get(key[0], {}).get(key[1])
            if t is None:
                raise ValueError(f"{path}: missing [{key[0]}.{key[1]}] thresholds")

    @property
    def card(self) -> dict:
        return {"name": NAME, "version": self.version, "task": "stenosis grading",
                "architecture": "literature thresholds on image measurements",
                "thresholds": str(THRESHOLDS_PATH.name)}

    def _probs(self, condition: str, measure: str, value: float) -> list[float]:
        t = self.thresholds[condition][measure]
        return ordinal_probabilities(value, t["moderate"], t["severe"], t["width"])

    def grade(self, anatomy: StudyAnatomy, level: LevelGeometry, condition: str,
              side: Side | None) -> Grade:
        if condition == CANAL:
            return self._canal(anatomy, level)
        if side is None:
            raise ValueError(f"condition {condition!r} needs a side")
        if condition == FORAMEN:
            return self._foramen(anatomy, level, side)
        if condition == SUBARTICULAR:
            return self._subarticular(anatomy, level, side)
        raise ValueError(f"unknown condition {condition!r}")

    def _canal(self, anatomy: StudyAnatomy, level: LevelGeometry) -> Grade:
        measured = [m for m in anatomy.measurements.get(level.level, [])
                    if m.get("name") == "canal_ap_diameter"]
        out: list[dict] = []
        roi = None
        if measured:
            m = measured[0]
            ap = float(m["value"])
            out.append(dict(m))
            roi = {"series_instance_uid": m.get("series_instance_uid"), "slice": m.get("slice")}
        else:
            ap_m = im.canal_ap_from_labels(anatomy, level)
            if ap_m is None:
                return Grade(None, "no canal AP measurement and no canal label at this level")
            out.append(ap_m)
            ap = float(ap_m["value"])
            roi = {"series_instance_uid": ap_m["series_instance_uid"], "slice": ap_m["slice"]}
        area = im.canal_area_from_labels(anatomy, level)
        if area is not None:
            out.append(area)
        ratio = self._canal_ratio(anatomy, ap)
        if ratio is not None:
            out.append({"name": "canal_ap_ratio", "value": round(ratio, 3), "unit": "1",
                        "series_instance_uid": roi.get("series_instance_uid"),
                        "slice": roi.get("slice")})
        return Grade(self.canal_probabilities(ap, ratio), None, out, roi=roi)

    def _canal_ratio(self, anatomy: StudyAnatomy, ap: float) -> float | None:
        """AP at this disc over the median AP of the patient's measured lumbar levels."""
        rule = self.thresholds[CANAL].get("relative")
        values = [float(m["value"]) for ms in anatomy.measurements.values() for m in ms
                  if m.get("name") == "canal_ap_diameter"]
        if rule is None or len(values) < int(rule.get("min_levels", 3)):
            return None
        return ap / float(np.median(values))

    def canal_probabilities(self, ap: float, ratio: float | None) -> list[float]:
        """Absolute cut-offs, with Moderate also requiring focal narrowing when known.

        P(>= Moderate) = P(AP < moderate) x P(ratio < ratio_moderate), never below
        P(Severe), which the absolute cut-off decides alone: probabilities stay ordinal.
        """
        t = self.thresholds[CANAL]["ap_diameter"]
        p_ge_mod = float(expit((t["moderate"] - ap) / t["width"]))
        p_sev = float(expit((t["severe"] - ap) / t["width"]))
        rule = self.thresholds[CANAL].get("relative")
        if ratio is not None and rule is not None:
            p_ge_mod *= float(expit((rule["ratio_moderate"] - ratio) / rule["width"]))
        p_ge_mod = max(p_ge_mod, p_sev)
        probs = np.clip(np.array([1.0 - p_ge_mod, p_ge_mod - p_sev, p_sev]), 1e-4, None)
        return [float(p) for p in probs / probs.sum()]

    def _foramen(self, anatomy: StudyAnatomy, level: LevelGeometry, side: Side) -> Grade:
        role = "sag_t1" if "sag_t1" in anatomy.volumes else None
        if role is None:
            return Grade(None, "no sagittal T1 series: perineural fat cannot be assessed")
        crop = foramen_crop(anatomy, level, side, role)
        if crop is None or crop.coverage < 0.5:
            return Grade(None, f"{side} foramen at {level.level} lies outside the sagittal T1")
        value = im.foraminal_fat_fraction(crop)
        m = {"name": "perineural_fat_fraction", "value": round(value, 3), "unit": "1",
             "series_instance_uid": crop.series_instance_uid, "slice": crop.slice_index}
        return Grade(self._probs(FORAMEN, "fat_fraction", value), None, [m], crop)

    def _subarticular(self, anatomy: StudyAnatomy, level: LevelGeometry, side: Side) -> Grade:
        crop = subarticular_crop(anatomy, level, side)
        if crop is None:
            return Grade(None, f"no axial T2 slice within reach of the {level.level} disc plane")
        if crop.coverage < 0.5:
            return Grade(None, f"{side} lateral recess at {level.level} outside the axial T2")
        value = im.recess_patency(crop)
        m = {"name": "lateral_recess_patency", "value": round(value, 3), "unit": "1",
             "series_instance_uid": crop.series_instance_uid, "slice": crop.slice_index}
        return Grade(self._probs(SUBARTICULAR, "recess_patency", value), None, [m], crop)
