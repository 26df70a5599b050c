"""``grade_study``: the 25 findings of a study, each decided by the grader allowed to.

Policy (``models.grading.decision``): the measurement grader decides unless the learned
grader's card shows validation on real images for the condition and its out-of-distribution
gate passed; the other grader's opinion rides along as ``second_opinion``; a disagreement of
a band or more, an out-of-distribution flag or an Undetermined finding marks the finding for
review. A study whose segmentation is out of distribution has every finding withdrawn
(Undetermined, with the gate's reason): its measurements cannot be trusted either.
Each finding names the grader that produced it, its kind and its training data.
"""

from __future__ import annotations

import numpy as np

from lumbar_common.vocabulary import (
    CANAL,
    FORAMEN,
    Side,
    finding_keys,
)
from models.grading.decision import (
    MEASUREMENT_KIND,
    MEASUREMENT_TRAINING,
    Opinion,
    decide,
    disagreement_reason,
    learned_kind,
    opinion_payload,
)
from models.grading.measurement_grader import MeasurementGrader
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
            "grader_kind": None, "training_data": None, "model_version": None, "roi": None,
            "measurements": [], "second_opinion": None, "disagreement": None,
            "review": {"required": False, "reasons": []},
            "ood": {"flagged": False, "reasons": []}}


def undetermined_findings(reason: str) -> list[dict]:
    """All 25 findings Undetermined for one reason (e.g. too few sagittal slices to grade)."""
    out = []
    for condition, side, level in finding_keys():
        f = _finding(level, condition, side)
        f["reason"] = reason
        _flag(f, "Undetermined: " + reason)
        out.append(f)
    return out


def _learned_opinion(pred: dict | None, card: dict | None) -> Opinion | None:
    if pred is None or card is None:
        return None
    kind, training = learned_kind(card)
    ood = pred.get("ood") or {}
    withdrawn = None
    probs = pred.get("probabilities")
    if probs is None:
        withdrawn = pred.get("reason") or "not assessable"
    elif ood.get("flagged"):
        withdrawn = f"out of distribution: {ood.get('reason') or 'input unlike the training data'}"
        probs = None
    return Opinion("learned", probs, card.get("version"), kind, training, withdrawn)


def _flag(f: dict, reason: str) -> None:
    f["review"]["required"] = True
    if reason not in f["review"]["reasons"]:
        f["review"]["reasons"].append(reason)


def _apply_ood(f: dict, study: dict | None, level: dict | None) -> bool:
    """Mark the finding with the segmentation gate's flags; True when it must be withdrawn."""
    withdraw = False
    if study and study.get("flagged"):
        why = str(study.get("reason") or "segmentation out of distribution for this study")
        f["ood"]["flagged"] = True
        f["ood"]["reasons"].append(why)
        withdraw = True
    if level and level.get("flagged"):
        why = str(level.get("reason") or f"segmentation out of distribution at {f['level']}")
        f["ood"]["flagged"] = True
        f["ood"]["reasons"].append(why)
        _flag(f, why)
    return withdraw


def grade_study(anatomy: StudyAnatomy, device: str = "auto",
                ood: dict | None = None) -> tuple[list[dict], dict]:
    """The 25 findings (findings.json schema) and the model cards of the graders used.

    ``ood``: the segmentation gate's verdicts, ``{"segmentation": {...}, "levels": {...}}``.
    """
    from models.grading.learned_grader import LearnedGrader, LearnedUnavailable

    measurer = MeasurementGrader()
    cards: dict = {"grader_measurement": measurer.card}
    learned_out: dict[str, dict] = {}
    learned_card: dict | None = None
    learned_reason = None
    try:
        learned = LearnedGrader.load(device)
        learned_card = learned.card
        cards["grader_learned"] = learned.card_summary
        learned_out = learned.predict(anatomy)
    except LearnedUnavailable as exc:
        learned_reason = str(exc)
    ood = ood or {}
    levels = {lv.level: lv for lv in anatomy.levels}
    findings: list[dict] = []
    for condition, side, level_name in finding_keys():
        f = _finding(level_name, condition, side)
        findings.append(f)
        level = levels.get(level_name)
        if level is None:
            f["reason"] = f"level {level_name} was not found by the level labelling"
            _flag(f, "Undetermined: " + f["reason"])
            continue
        withdraw = _apply_ood(f, ood.get("segmentation"), ood.get("levels", {}).get(level_name))
        m = measurer.grade(anatomy, level, condition, side)
        measured = Opinion("measurement", m.probabilities, measurer.version, MEASUREMENT_KIND,
                           MEASUREMENT_TRAINING, None if m.probabilities else m.reason)
        pred = learned_out.get(level_name, {}).get((condition, side))
        learned_op = _learned_opinion(pred, learned_card)
        first, second, disagreement = decide(measured, learned_op, learned_card, condition)
        f["second_opinion"] = opinion_payload(second)
        if withdraw or first is None:
            reasons = list(f["ood"]["reasons"]) if withdraw else []
            reasons += [r for r in (m.reason, learned_op.withdrawn if learned_op else
                                    learned_reason) if r]
            f["reason"] = "; ".join(dict.fromkeys(reasons)) or "not assessable"
            f["roi"] = _roi(anatomy, level, condition, side)
            _flag(f, "Undetermined: " + f["reason"])
            continue
        assert first.probabilities is not None and first.grade is not None
        f.update(grade=first.grade, probabilities=[round(float(p), 4) for p in first.probabilities],
                 assessable=True, grader=first.grader, grader_kind=first.kind,
                 training_data=first.training_data, model_version=first.model_version,
                 measurements=list(m.measurements), disagreement=disagreement)
        if first.grader == "learned":
            assert pred is not None
            f["roi"] = pred.get("roi")
            if "lss_probabilities" in pred:
                f["lss_probabilities"] = pred["lss_probabilities"]
        else:
            f["roi"] = _roi_of_crop(m.crop) or _roi(anatomy, level, condition, side)
            if f["roi"] is None and m.roi is not None:
                f["roi"] = {**m.roi, "corners_lps": None}
        if disagreement is not None:
            _flag(f, disagreement_reason(disagreement))
    return findings, cards
