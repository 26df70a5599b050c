"""What a radiologist needs to weigh one AI grade: who decided it, from what training data,
whether it needs review and why, and what the other grader said.

Every item is optional in the findings dict (older dicts have none of them) and rendered
whenever present. Items a program may sort or filter on are CODE qualitative evaluations
(deciding grader, review required, each grader's grade when they disagree, the second
opinion's grade); what a reader has to read is TEXT (kind of grader, training data, review
reasons, why a second opinion was withdrawn). The number of grade bands between the graders
is a NUM so that it can be compared across studies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import highdicom as hd
from highdicom.sr import CodedConcept

from lumbar_common.vocabulary import GRADES
from models.reports.sr.codes import (
    BANDS,
    DISAGREEMENT,
    EXPLANATION_GRADE,
    GRADE_CODES,
    GRADER,
    GRADER_KIND,
    GRADER_VALUES,
    NO,
    OOD_REASON,
    REVIEW_REASON,
    REVIEW_REQUIRED,
    SECOND_GRADE,
    SECOND_GRADER,
    SECOND_PROBABILITIES,
    SECOND_WITHDRAWN,
    TRAINING_DATA,
    YES,
    grade_by,
    private,
)

#: TEXT values are UT, but viewers show them in one line: long reasons are cut here
MAX_TEXT = 1024


@dataclass
class TrustItems:
    """Content items of one finding's group, by where they go."""

    evaluations: list[hd.sr.QualitativeEvaluation] = field(default_factory=list)
    measurements: list[hd.sr.Measurement] = field(default_factory=list)
    texts: list[hd.sr.TextContentItem] = field(default_factory=list)

    def code(self, name: CodedConcept, value: object) -> None:
        self.evaluations.append(hd.sr.QualitativeEvaluation(name, value))

    def text(self, name: CodedConcept, value: object) -> None:
        if value is None or str(value) == "":
            return
        self.texts.append(
            hd.sr.TextContentItem(
                name=name,
                value=str(value)[:MAX_TEXT],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )


def grader_value(grader: str) -> CodedConcept:
    if grader in GRADER_VALUES:
        return GRADER_VALUES[grader]
    key = "".join(ch for ch in grader.upper() if ch.isalnum())[:10] or "UNKNOWN"
    return private(f"LSTEN-GRADER-{key}", f"{grader} grader"[:64])


def probabilities_text(probabilities: object) -> str | None:
    """``"Normal/Mild 0.10, Moderate 0.20, Severe 0.70"``, or None without three values."""
    try:
        values = [float(p) for p in probabilities]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if len(values) != len(GRADES):
        return None
    return ", ".join(f"{g} {p:.2f}" for g, p in zip(GRADES, values, strict=True))


def trust_items(finding: Mapping) -> TrustItems:
    """The provenance, review and second-opinion items of one finding."""
    items = TrustItems()
    grader = finding.get("grader")
    if grader:
        items.code(GRADER, grader_value(str(grader)))
    items.text(GRADER_KIND, finding.get("grader_kind"))
    items.text(TRAINING_DATA, finding.get("training_data"))
    review = finding.get("review")
    reasons: list[str] = []
    if isinstance(review, Mapping):
        items.code(REVIEW_REQUIRED, YES if review.get("required") else NO)
        reasons = [str(r) for r in review.get("reasons") or []]
        for reason in reasons:
            items.text(REVIEW_REASON, reason)
    ood = finding.get("ood")
    if isinstance(ood, Mapping) and ood.get("flagged"):
        for reason in ood.get("reasons") or []:
            if str(reason) not in reasons:  # already said as a reason for review
                items.text(OOD_REASON, reason)
    _disagreement(items, finding.get("disagreement"))
    second = finding.get("second_opinion")
    _second_opinion(items, second)
    _explanation(items, finding.get("explanation"), second)
    return items


def _disagreement(items: TrustItems, disagreement: object) -> None:
    if not isinstance(disagreement, Mapping):
        return
    for grader, grade in (disagreement.get("grades") or {}).items():
        if grade in GRADE_CODES:
            items.code(grade_by(str(grader)), GRADE_CODES[grade])
    bands = disagreement.get("bands")
    if bands is not None:
        items.measurements.append(
            hd.sr.Measurement(name=DISAGREEMENT, value=float(bands), unit=BANDS)
        )


def _second_opinion(items: TrustItems, second: object) -> None:
    if not isinstance(second, Mapping):
        return
    grader = str(second.get("grader") or "other")
    described = f"{grader} grader"
    if second.get("grader_kind"):
        described += f" ({second['grader_kind']})"
    if second.get("model_version"):
        described += f", version {second['model_version']}"
    items.text(SECOND_GRADER, described)
    if second.get("withdrawn"):
        items.text(SECOND_WITHDRAWN, second["withdrawn"])
        return
    if second.get("grade") in GRADE_CODES:
        items.code(SECOND_GRADE, GRADE_CODES[second["grade"]])
    items.text(SECOND_PROBABILITIES, probabilities_text(second.get("probabilities")))


def _explanation(items: TrustItems, explanation: object, second: object) -> None:
    """The measurement grader's grade beside a learned decision (older findings' key);
    left out when the second opinion already is that grader's grade."""
    if not isinstance(explanation, Mapping) or explanation.get("grade") not in GRADE_CODES:
        return
    if isinstance(second, Mapping) and second.get("grader") == explanation.get("grader"):
        return
    items.code(EXPLANATION_GRADE, GRADE_CODES[explanation["grade"]])


def review_suffix(finding: Mapping) -> str:
    """Tracking identifier suffix, e.g. ``" [review: learned severe]"``: OHIF shows only the
    tracking identifier as a measurement's label, so the review mark has to be in it."""
    review = finding.get("review")
    if not isinstance(review, Mapping) or not review.get("required"):
        return ""
    disagreement = finding.get("disagreement")
    grades = disagreement.get("grades") if isinstance(disagreement, Mapping) else None
    others = [
        f"{grader} {str(grade).lower()}"
        for grader, grade in (grades or {}).items()
        if grader != finding.get("grader")
    ]
    return f" [review: {', '.join(others)}]" if others else " [review]"


__all__ = ["TrustItems", "probabilities_text", "review_suffix", "trust_items"]
