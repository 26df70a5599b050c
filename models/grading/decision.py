"""Who decides a finding's grade, and when a reader must look twice.

A learned model earns the say on a finding only where its model card shows validation on
real images for that condition (``validated_on_real``) and its out-of-distribution gate
passed at that level. Otherwise the explainable measurement grader decides, because its
measurements come from a segmentation trained and tested on real MRI and every number can
be checked with a ruler. The other grader's opinion always rides along; when the two differ
by a grade band or more the finding is marked for review with both grades, so a
disagreement is never resolved silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lumbar_common.vocabulary import GRADES

MEASUREMENT_KIND = "rule-based: published thresholds on measurements"
MEASUREMENT_TRAINING = ("no training; measurements on a segmentation trained on real "
                        "SPIDER MRI and synthetic studies")
LEARNED_KIND = {
    "synthetic": "learned: trained on synthetic studies only",
    "real": "learned: trained on real MRI",
    "real+synthetic": "learned: trained on real MRI and synthetic studies",
}


@dataclass(frozen=True)
class Opinion:
    """One grader's output for one finding (probabilities None: withdrawn or not assessable)."""

    grader: str  # "measurement" | "learned"
    probabilities: list[float] | None
    model_version: str | None
    kind: str
    training_data: str
    withdrawn: str | None = None

    @property
    def grade(self) -> str | None:
        if self.probabilities is None:
            return None
        return GRADES[int(np.argmax(self.probabilities))]


def learned_kind(card: dict) -> tuple[str, str]:
    """(grader_kind, training_data) texts for a learned model from its card."""
    data = str(card.get("training_data_kind") or "synthetic")
    kind = LEARNED_KIND.get(data, f"learned: trained on {data}")
    return kind, f"{data} ({card.get('name', 'learned model')} {card.get('version', '')})".strip()


def may_decide(card: dict | None, condition: str) -> bool:
    """Whether a learned model's card shows real-image validation for this condition."""
    return bool(card) and condition in (card or {}).get("validated_on_real", [])


def bands_apart(a: str, b: str) -> int:
    return abs(GRADES.index(a) - GRADES.index(b))


def decide(measured: Opinion | None, learned: Opinion | None, learned_card: dict | None,
           condition: str) -> tuple[Opinion | None, Opinion | None, dict | None]:
    """(deciding opinion, second opinion, disagreement) for one finding.

    The learned opinion decides only when allowed by its card and not withdrawn; otherwise
    the measurement opinion decides if it has a grade. A withdrawn learned opinion is kept
    as the second opinion (with its reason) but never counts as a disagreement.
    """
    learned_ok = learned is not None and learned.probabilities is not None
    measured_ok = measured is not None and measured.probabilities is not None
    if learned_ok and may_decide(learned_card, condition):
        first, second = learned, measured
    elif measured_ok:
        first, second = measured, learned
    elif learned_ok:
        # Nothing validated can grade this finding: the learned output is only a hint.
        return None, learned, None
    else:
        return None, learned if learned is not None else measured, None
    disagreement = None
    if second is not None and second.grade is not None and first is not None:
        assert first.grade is not None
        bands = bands_apart(first.grade, second.grade)
        if bands >= 1:
            grades = {first.grader: first.grade, second.grader: second.grade}
            disagreement = {"bands": bands, "grades": grades}
    return first, second, disagreement


def opinion_payload(op: Opinion | None) -> dict | None:
    if op is None:
        return None
    return {"grader": op.grader, "grader_kind": op.kind, "grade": op.grade,
            "probabilities": op.probabilities, "model_version": op.model_version,
            "withdrawn": op.withdrawn}


def disagreement_reason(disagreement: dict) -> str:
    parts = ", ".join(f"{k} {v}" for k, v in disagreement["grades"].items())
    bands = disagreement["bands"]
    return f"graders disagree by {bands} band{'s' if bands > 1 else ''} ({parts})"
