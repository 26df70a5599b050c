"""Radiologists' reviews as data: agreement with the node and labels to learn from.

Every confirmation is a measure of how well the node does at this site, every correction a
label. Only the latest review of a finding counts (reviews are append-only; a change of
mind is a new row), and only findings the node graded enter the agreement: an Undetermined
finding has no node grade to agree with, though its correction is still a label.

Agreement is reported as observed agreement, Cohen's kappa (chance-corrected) and the
confusion matrix (rows: node, columns: radiologist), per finding kind (condition, or disc
finding) and per model version, so a model upgrade that does worse here is seen at once.

The export writes the labels in the layouts the models train on: RSNA 2024 for stenosis,
SPIDER's gradings for discs, so a site's corrections can join the training data as they are.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import Review
from dicom_node.feedback_gradings import write_gradings
from dicom_node.review_data import PRESENCE, disc_choices
from lumbar_common.vocabulary import GRADES, finding_keys, rsna_key

#: groups whose agreement is held against AGREEMENT_FLOOR, with the words a warning uses
WATCHED = {"all stenosis": "all stenosis", "all disc": "all disc",
           "disc_pfirrmann": "disc Pfirrmann grade", "disc_modic": "disc Modic type"}


def cohen_kappa(matrix: Sequence[Sequence[int]]) -> float | None:
    """Cohen's kappa of a square confusion matrix; None when undefined (no pairs, or
    both raters always gave the same single category, so chance agreement is 1)."""
    n = sum(sum(row) for row in matrix)
    if n == 0:
        return None
    k = len(matrix)
    observed = sum(matrix[i][i] for i in range(k)) / n
    rows = [sum(matrix[i]) / n for i in range(k)]
    cols = [sum(matrix[i][j] for i in range(k)) / n for j in range(k)]
    expected = sum(r * c for r, c in zip(rows, cols, strict=True))
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


@dataclass
class Agreement:
    """Pairs (node value, radiologist value) of one group of findings."""

    categories: tuple[str, ...]
    matrix: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.matrix:
            self.matrix = [[0] * len(self.categories) for _ in self.categories]

    def add(self, node: str, radiologist: str) -> None:
        self.matrix[self.categories.index(node)][self.categories.index(radiologist)] += 1

    @property
    def n(self) -> int:
        return sum(sum(row) for row in self.matrix)

    @property
    def agreement(self) -> float | None:
        n = self.n
        return sum(self.matrix[i][i] for i in range(len(self.categories))) / n if n else None

    @property
    def kappa(self) -> float | None:
        return cohen_kappa(self.matrix)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "agreement": self.agreement, "kappa": self.kappa,
                "categories": list(self.categories), "confusion": self.matrix}


def finding_group(review: Review) -> str:
    """`spinal_canal_stenosis`, `left_neural_foraminal_narrowing`, `disc_herniation`, …:
    the finding key without its level."""
    return review.finding_key.rsplit("_", 2)[0]


def latest(reviews: Iterable[Review]) -> list[Review]:
    """The last review of each (job, finding): earlier ones were changed minds."""
    last: dict[tuple[int, str], Review] = {}
    for review in sorted(reviews, key=lambda r: r.id):
        last[(review.job_id, review.finding_key)] = review
    return list(last.values())


def reviewed_value(review: Review) -> str | None:
    return review.node_value if review.verdict == "confirm" else review.corrected_value


def categories_of(review: Review) -> tuple[str, ...]:
    return disc_choices(review.finding_key) if review.kind == "disc" else GRADES


def agreement_report(reviews: Iterable[Review]) -> dict[str, Any]:
    """{"by_model": {version: {group: Agreement dict, "all …": …}}, "reviews": n} over the
    latest review of every finding the node graded. "all disc" pools the present/absent
    disc findings; Pfirrmann grades and Modic types have other categories, so each is
    its own group only."""
    by_model: dict[str, dict[str, Agreement]] = defaultdict(dict)
    counted = 0
    for review in latest(reviews):
        value = reviewed_value(review)
        if review.node_value is None or value is None:
            continue
        categories = categories_of(review)
        if review.node_value not in categories or value not in categories:
            continue
        version = review.model_version or "unknown"
        groups = by_model[version]
        pooled = ("all stenosis",) if review.kind != "disc" else (
            ("all disc",) if categories == PRESENCE else ())
        for group in (finding_group(review), *pooled):
            groups.setdefault(group, Agreement(categories)).add(review.node_value, value)
        counted += 1
    return {"reviews": counted, "by_model": {
        version: {group: a.as_dict() for group, a in sorted(groups.items())}
        for version, groups in sorted(by_model.items())}}


def low_agreement(report: dict[str, Any], floor: float, min_reviews: int) -> list[str]:
    """Warnings for model versions whose agreement has fallen below the floor."""
    warnings = []
    for version, groups in report["by_model"].items():
        for group, words in WATCHED.items():
            stats = groups.get(group)
            if stats and stats["n"] >= min_reviews and stats["agreement"] < floor:
                warnings.append(f"model {version}: radiologists agree with {words} findings "
                                f"in {stats['agreement']:.0%} of {stats['n']} reviews, below "
                                f"the floor of {floor:.0%}")
    return warnings


def all_reviews(session: Session) -> list[Review]:
    return list(session.scalars(select(Review).order_by(Review.id)))


RSNA_COLUMNS = [rsna_key(c, s, lv) for c, s, lv in finding_keys()]


def export(session: Session, out: Path) -> dict[str, int]:
    """Writes `train.csv` (RSNA 2024 layout: `study_id` and the 25 `condition_level`
    columns, Normal/Mild | Moderate | Severe, empty where not reviewed), `studies.csv`
    (`study_id` to StudyInstanceUID, analysis job, model versions, reviewers),
    `discs.csv` (one row per reviewed disc finding: Pfirrmann grade, Modic type or
    present/absent) and `gradings.csv` (the same disc labels, one row per reviewed disc, in
    SPIDER's layout: see dicom_node.feedback_gradings)."""
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, str]] = {}
    meta: dict[str, dict[str, set[str]]] = {}
    discs = []
    for review in sorted(latest(all_reviews(session)), key=lambda r: r.id):
        value = reviewed_value(review)
        if value is None:
            continue
        uid = review.study_instance_uid
        info = meta.setdefault(uid, {"jobs": set(), "models": set(), "reviewers": set()})
        info["jobs"].add(str(review.job_id))
        info["models"].add(review.model_version or "")
        info["reviewers"].add(review.reviewer)
        if review.kind == "disc":
            discs.append((uid, review.finding_key, value, review.verdict, review.reviewer))
        elif review.finding_key in RSNA_COLUMNS and value in GRADES:
            rows.setdefault(uid, {})[review.finding_key] = value
        else:
            rows.setdefault(uid, {})
    order = list(meta)
    ids = {uid: str(i + 1) for i, uid in enumerate(order)}
    with (out / "train.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study_id", *RSNA_COLUMNS])
        for uid in order:
            labels = rows.get(uid, {})
            writer.writerow([ids[uid], *(labels.get(c, "") for c in RSNA_COLUMNS)])
    with (out / "studies.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study_id", "study_instance_uid", "job_ids", "model_versions",
                         "reviewers"])
        for uid in order:
            info = meta[uid]
            writer.writerow([ids[uid], uid, ";".join(sorted(info["jobs"])),
                             ";".join(sorted(filter(None, info["models"]))),
                             ";".join(sorted(info["reviewers"]))])
    with (out / "discs.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study_id", "level", "finding", "value", "verdict", "reviewer"])
        for uid, key, value, verdict, reviewer in discs:
            name, level = _split_disc_key(key)
            writer.writerow([ids[uid], level, name, value, verdict, reviewer])
    labels = []
    for uid, key, value, _verdict, _reviewer in discs:
        name, level = _split_disc_key(key)
        labels.append((ids[uid], level, name, value))
    graded = write_gradings(out / "gradings.csv", labels)
    return {"studies": len(order), "labels": sum(len(r) for r in rows.values()),
            "disc_labels": len(discs), "discs_graded": graded}


def _split_disc_key(key: str) -> tuple[str, str]:
    """`disc_endplate_upper_l4_l5` -> (`endplate_upper`, `L4-L5`)."""
    body, upper, lower = key[len("disc_"):].rsplit("_", 2)
    return body, f"{upper.upper()}-{lower.upper()}"
