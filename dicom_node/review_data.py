"""What the review console shows of a study, read from the rows the node already keeps.

A study's status is derived, never stored twice: Study.state while it is arriving, then its
analysis job's state, then that job's deliveries. The findings come from the job's
findings.json (the Finding table holds only grades; the console also needs the evidence,
review reasons and disc findings). A corrected report is a job of its own (see
ReportVersion), so "the analysis" of a study is its latest job that is not one of those.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import Delivery, Job, ReportVersion, ResultObject, Review, Study
from dicom_node.studies import aware
from lumbar_common.vocabulary import GRADES, rsna_key

#: the statuses the worklist filters on, in the order a study moves through them
STATUSES = ("receiving", "queued", "running", "delivering", "delivered", "partial",
            "no-destination", "failed", "rejected", "dead-letter", "ignored")
#: a disc finding a radiologist can confirm or correct (present/absent)
DISC_BINARY = ("narrowing", "herniation", "bulging", "spondylolisthesis", "endplate_upper",
               "endplate_lower")
PRESENCE = ("present", "absent")
#: a disc's graded findings: findings.json key -> (field holding the value, its values as
#: the review form and the reviews table spell them)
DISC_GRADED: dict[str, tuple[str, tuple[str, ...]]] = {
    "pfirrmann": ("grade", ("1", "2", "3", "4", "5")),
    "modic": ("type", ("0", "1", "2", "3")),
}


def correction_job_ids(session: Session) -> set[int]:
    return set(session.scalars(select(ReportVersion.job_id)
                               .where(ReportVersion.job_id.is_not(None))))


def analysis_job(session: Session, study: Study) -> Job | None:
    """The study's current analysis: its latest job that is not a corrected report."""
    corrections = correction_job_ids(session)
    for job in session.scalars(select(Job).where(Job.study_id == study.id,
                                                 Job.superseded_by.is_(None))
                               .order_by(Job.id.desc())):
        if job.id not in corrections:
            return job
    return None


def study_status(study: Study, job: Job | None, deliveries: Iterable[Delivery]) -> str:
    if study.state == "ignored":
        return "ignored"
    if study.state == "receiving" or job is None:
        return "receiving" if study.state == "receiving" else "queued"
    if job.state in ("queued", "running", "failed"):
        return str(job.state)
    if job.result_status == "rejected":
        return "rejected"
    rows = list(deliveries)
    if any(d.status == "dead" for d in rows):
        return "dead-letter"
    if not rows:
        return "no-destination"
    if any(d.status != "delivered" for d in rows):
        return "delivering"
    return "partial" if job.result_status == "partial" else "delivered"


def turnaround_s(study: Study, job: Job | None, deliveries: Iterable[Delivery]) -> float | None:
    """First instance received to results delivered (or analysis finished, if nothing went)."""
    done = [aware(d.delivered_at) for d in deliveries if d.delivered_at is not None]
    end = max(done) if done else (aware(job.finished_at) if job and job.finished_at else None)
    return (end - aware(study.first_received_at)).total_seconds() if end else None


def load_findings(session: Session, job: Job | None) -> dict[str, Any] | None:
    """The job's findings.json, or None when the job has none (not finished, rejected)."""
    if job is None:
        return None
    path = session.scalar(select(ResultObject.path).where(
        ResultObject.job_id == job.id, ResultObject.kind == "findings")
        .order_by(ResultObject.id.desc()))
    if path is None or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


@dataclass
class FindingRow:
    """One line of the review table: a stenosis grade, or a disc's Pfirrmann grade, Modic
    type or present/absent finding."""

    key: str
    kind: str  # stenosis | disc
    level: str
    label: str
    node_value: str | None
    choices: tuple[str, ...]
    probability: float | None = None
    grader: str | None = None
    model_version: str | None = None
    flagged: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    reason: str | None = None
    review: Review | None = None

    @property
    def reviewed_value(self) -> str | None:
        """The radiologist's value: the node's when confirmed, the correction otherwise."""
        if self.review is None:
            return None
        return self.node_value if self.review.verdict == "confirm" else (
            self.review.corrected_value)


def _measurement(m: dict[str, Any]) -> str:
    value = m.get("value")
    shown = f"{value:.1f}" if isinstance(value, int | float) else str(value)
    return f"{m.get('name')} {shown} {m.get('unit') or ''}".strip()


def stenosis_rows(document: dict[str, Any]) -> list[FindingRow]:
    rows = []
    for f in document.get("findings") or []:
        side = f.get("side")
        key = rsna_key(f["condition"], side, f["level"])
        probs = f.get("probabilities") or None
        grade = f.get("grade") if f.get("assessable") else None
        p = probs[GRADES.index(grade)] if probs and grade in GRADES else None
        reasons = list((f.get("review") or {}).get("reasons") or [])
        if not f.get("assessable") and not reasons:
            reasons.append("Undetermined")
        label = f["condition"].replace("_", " ")
        rows.append(FindingRow(
            key=key, kind="stenosis", level=f["level"],
            label=f"{side} {label}" if side else label, node_value=grade, choices=GRADES,
            probability=p, grader=f.get("grader"),
            model_version=model_version_of(f), flagged=reasons if (
                (f.get("review") or {}).get("required") or not f.get("assessable")) else [],
            evidence=[_measurement(m) for m in f.get("measurements") or []],
            reason=f.get("reason")))
    return rows


def model_version_of(finding: dict[str, Any]) -> str | None:
    """`grader@version` of the grader that decided a finding (None if nobody could)."""
    if not finding.get("grader") and not finding.get("model_version"):
        return None
    return f"{finding.get('grader') or '?'}@{finding.get('model_version') or '?'}"


def disc_rows(document: dict[str, Any]) -> list[FindingRow]:
    """Per disc: its Pfirrmann grade and Modic type, then its present/absent findings.
    An Undetermined disc lists all of them without a node value, to be corrected."""
    rows = []
    for disc in document.get("disc_findings") or []:
        assessable = bool(disc.get("assessable"))
        for name, (attribute, choices) in DISC_GRADED.items():
            item = disc.get(name) if isinstance(disc.get(name), dict) else {}
            raw = item.get(attribute) if assessable else None
            value = str(raw) if raw is not None and str(raw) in choices else None
            probs = item.get("probabilities")
            rows.append(_disc_row(disc, name, DISC_LABELS[name], value, choices,
                                  _chosen(probs, choices, value),
                                  [_distribution(probs, choices)] if value and probs else []))
        for name in DISC_BINARY:
            item = disc.get(name)
            if not isinstance(item, dict) and assessable:
                continue
            item = item if isinstance(item, dict) else {}
            present = item.get("present")
            rows.append(_disc_row(
                disc, name, name.replace("_", " "),
                None if present is None else ("present" if present else "absent"),
                PRESENCE, item.get("probability"), []))
    return rows


def _disc_row(disc: dict[str, Any], name: str, label: str, value: str | None,
              choices: tuple[str, ...], probability: float | None,
              evidence: list[str]) -> FindingRow:
    level = str(disc.get("level"))
    return FindingRow(
        key=disc_key(name, level), kind="disc", level=level, label=f"disc {label}",
        node_value=value, choices=choices, probability=probability, grader="disc",
        model_version=f"disc@{disc.get('model_version') or '?'}",
        flagged=[] if disc.get("assessable") else ["Undetermined"], evidence=evidence,
        reason=disc.get("reason"))


DISC_LABELS = {"pfirrmann": "Pfirrmann grade", "modic": "Modic type"}


def _chosen(probs: Any, choices: tuple[str, ...], value: str | None) -> float | None:
    """The probability the node gave the value it chose, if it wrote a distribution."""
    if value is None or not isinstance(probs, list) or len(probs) != len(choices):
        return None
    p = probs[choices.index(value)]
    return float(p) if isinstance(p, int | float) else None


def _distribution(probs: list[Any], choices: tuple[str, ...]) -> str:
    if len(probs) != len(choices):
        return ""
    return "P " + ", ".join(f"{c}: {p:.2f}" for c, p in zip(choices, probs, strict=True)
                            if isinstance(p, int | float))


def disc_choices(finding_key: str) -> tuple[str, ...]:
    """The values a disc finding can take, from its review key (`disc_modic_l4_l5`)."""
    for name, (_attribute, choices) in DISC_GRADED.items():
        if finding_key.startswith(f"disc_{name}_"):
            return choices
    return PRESENCE


def disc_key(name: str, level: str) -> str:
    return f"disc_{name}_{level.lower().replace('-', '_')}"


def finding_rows(session: Session, job: Job, document: dict[str, Any]) -> list[FindingRow]:
    rows = stenosis_rows(document) + disc_rows(document)
    latest = latest_reviews(session, [job.id])
    for row in rows:
        row.review = latest.get((job.id, row.key))
    return rows


def latest_reviews(session: Session, job_ids: Iterable[int]) -> dict[tuple[int, str], Review]:
    """(job, finding key) -> the latest review: reviews are append-only, the last counts."""
    out: dict[tuple[int, str], Review] = {}
    ids = list(job_ids)
    if not ids:
        return out
    for review in session.scalars(select(Review).where(Review.job_id.in_(ids))
                                  .order_by(Review.id)):
        out[(review.job_id, review.finding_key)] = review
    return out


def flagged_summary(document: dict[str, Any] | None) -> list[str]:
    """`L4-L5 left foramen: graders disagree` style lines for the worklist."""
    if not document:
        return []
    lines = []
    for row in stenosis_rows(document) + disc_rows(document):
        if row.flagged:
            lines.append(f"{row.level} {row.label}: {'; '.join(row.flagged)}"[:160])
    return lines


def iso(value: datetime | None) -> str:
    return aware(value).isoformat(timespec="seconds") if value else ""
