"""``grade_study``: the 25 findings of a study from whichever grader can assess each.

Policy per finding: the learned grader when its weights are installed and its input series
are present; otherwise the measurement grader if it can measure the finding; otherwise the
finding is ``assessable: false`` with both reasons. When the learned grader decides, the
measurement grader's result rides along under ``explanation`` so a reader can check the
number behind the grade. Each finding names the grader that produced it.
"""

from __future__ import annotations

import numpy as np

from lumbar_common.vocabulary import (
    CANAL,
    FORAMEN,
    GRADES,
    Side,
    finding_keys,
)
from models.grading.measurement_grader import Grade, MeasurementGrader
from models.grading.roi import Crop, canal_crop, foramen_crop, subarticular_crop
from models.study import LevelGeometry, StudyAnatomy


def _roi_of_crop(crop: Crop | None) -> dict | None:
    if crop is None:
        return None
    return {"series_instance_uid": crop.series_instance_uid, "slice": crop.slice_index,
            "corners_lps": np.round(crop.corners_lps, 2).tolist()}


def _roi(anatomy: StudyAnatomy, level: LevelGeometry, condition: str,
         side: Side | None) -> dict | None:
    """Where a reader should look for this finding (the grader's centre crop)."""
    if condition == CANAL:
        return _roi_of_crop(canal_crop(anatomy, level))
    assert side is not None
    if condition == FORAMEN:
        return _roi_of_crop(foramen_crop(anatomy, level, side))
    return _roi_of_crop(subarticular_crop(anatomy, level, side))


def _finding(level: str, condition: str, side: Side | None) -> dict:
    return {"level": level, "condition": condition, "side": side, "grade": None,
            "probabilities": None, "assessable": False, "reason": None, "grader": None,
            "model_version": None, "roi": None}


def _measurement_payload(g: Grade) -> dict:
    assert g.probabilities is not None
    return {"grader": "measurement", "grade": GRADES[int(np.argmax(g.probabilities))],
            "probabilities": [round(p, 4) for p in g.probabilities],
            "measurements": g.measurements}


def grade_study(anatomy: StudyAnatomy, device: str = "auto") -> tuple[list[dict], dict]:
    """The 25 findings (findings.json schema) and the model cards of the graders used."""
    from models.grading.learned_grader import LearnedGrader, LearnedUnavailable

    measurer = MeasurementGrader()
    cards: dict = {"grader_measurement": measurer.card}
    learned_out: dict[str, dict] = {}
    learned_reason = None
    try:
        learned = LearnedGrader.load(device)
        cards["grader_learned"] = learned.card_summary
        learned_out = learned.predict(anatomy)
    except LearnedUnavailable as exc:
        learned_reason = str(exc)
    levels = {lv.level: lv for lv in anatomy.levels}
    findings: list[dict] = []
    for condition, side, level_name in finding_keys():
        f = _finding(level_name, condition, side)
        findings.append(f)
        level = levels.get(level_name)
        if level is None:
            f["reason"] = f"level {level_name} was not found by the level labelling"
            continue
        m = measurer.grade(anatomy, level, condition, side)
        pred = learned_out.get(level_name, {}).get((condition, side))
        if pred is not None and pred.get("probabilities") is not None:
            probs = pred["probabilities"]
            f.update(grade=GRADES[int(np.argmax(probs))], probabilities=probs, assessable=True,
                     grader="learned", model_version=cards["grader_learned"]["version"],
                     roi=pred["roi"])
            if "lss_probabilities" in pred:
                f["lss_probabilities"] = pred["lss_probabilities"]
            if m.probabilities is not None:
                f["explanation"] = _measurement_payload(m)
        elif m.probabilities is not None:
            payload = _measurement_payload(m)
            f.update(grade=payload["grade"], probabilities=payload["probabilities"],
                     assessable=True, grader="measurement", model_version=measurer.version,
                     measurements=m.measurements)
            f["roi"] = _roi_of_crop(m.crop) or _roi(anatomy, level, condition, side)
            if f["roi"] is None and m.roi is not None:
                f["roi"] = {**m.roi, "corners_lps": None}
            why = (pred or {}).get("reason") or learned_reason
            if why:
                f["reason"] = f"learned grader: {why}; graded by measurement"
        else:
            reasons = [r for r in ((pred or {}).get("reason") or learned_reason, m.reason) if r]
            f["reason"] = "; ".join(dict.fromkeys(reasons)) or "not assessable"
            f["roi"] = _roi(anatomy, level, condition, side)
    return findings, cards



