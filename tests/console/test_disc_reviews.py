"""Disc findings under review: a disc's Pfirrmann grade and Modic type are confirmed or
corrected like its present/absent findings, stored in the append-only reviews table,
measured for agreement, exported in SPIDER's gradings layout (read back by the disc
grader's own loader) and carried into the corrected report's disc groups."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from consolekit import add_analysed_study, csrf_of, sign_in
from pydicom.uid import generate_uid
from sqlalchemy import select
from test_reviews import UID, _findings_doc

from dicom_node import feedback
from dicom_node.db.models import Job, Review
from dicom_node.review_data import latest_reviews, load_findings

PFIRRMANN_PS = [0.02, 0.08, 0.2, 0.6, 0.1]


def _document() -> dict:
    """The stenosis findings of test_reviews with two discs: L4-L5 graded (Pfirrmann 4,
    Modic 0, herniation present, bulging absent), L5-S1 Undetermined."""
    document = _findings_doc()
    document["disc_findings"] = [
        {"level": "L4-L5", "assessable": True, "model_version": "2",
         "pfirrmann": {"grade": 4, "probabilities": PFIRRMANN_PS},
         "modic": {"type": 0, "probabilities": [0.7, 0.1, 0.15, 0.05]},
         "herniation": {"present": True, "probability": 0.7},
         "bulging": {"present": False, "probability": 0.2}},
        {"level": "L5-S1", "assessable": False, "model_version": "2",
         "reason": "disc out of distribution"},
    ]
    return document


@pytest.fixture()
def discs(node, tmp_path) -> int:
    return add_analysed_study(node.sessions, UID, _document(), tmp_path)


def _review(client, key: str, verdict: str, value: str = "", comment: str = "") -> int:
    page = client.get(f"/ui/studies/{UID}")
    return client.post(f"/ui/studies/{UID}/reviews", data={
        "csrf_token": csrf_of(page.text), "finding_key": key, "verdict": verdict,
        "value": value, "comment": comment}).status_code


def test_pfirrmann_and_modic_are_confirmed_or_corrected(discs, browserless, node):
    sign_in(browserless, "rad")
    page = browserless.get(f"/ui/studies/{UID}").text
    for key in ("disc_pfirrmann_l4_l5", "disc_modic_l4_l5", "disc_pfirrmann_l5_s1",
                "disc_modic_l5_s1"):
        assert f'data-key="{key}"' in page
    assert "P 1: 0.02, 2: 0.08, 3: 0.20, 4: 0.60, 5: 0.10" in page  # the node's evidence
    assert _review(browserless, "disc_pfirrmann_l4_l5", "confirm") == 303
    assert _review(browserless, "disc_modic_l4_l5", "correct", "2", "type 2 on T1") == 303
    assert _review(browserless, "disc_pfirrmann_l4_l5", "correct", "6") == 400
    assert _review(browserless, "disc_pfirrmann_l4_l5", "correct", "Moderate") == 400
    assert _review(browserless, "disc_modic_l4_l5", "correct", "0") == 400  # = the node's
    assert _review(browserless, "disc_pfirrmann_l5_s1", "confirm") == 400  # Undetermined
    assert _review(browserless, "disc_pfirrmann_l5_s1", "correct", "3") == 303
    with node.sessions() as s:
        reviews = list(s.scalars(select(Review).order_by(Review.id)))
    assert [(r.finding_key, r.kind, r.node_value, r.verdict, r.corrected_value,
             r.model_version) for r in reviews] == [
        ("disc_pfirrmann_l4_l5", "disc", "4", "confirm", None, "disc@2"),
        ("disc_modic_l4_l5", "disc", "0", "correct", "2", "disc@2"),
        ("disc_pfirrmann_l5_s1", "disc", None, "correct", "3", "disc@2")]
    page = browserless.get(f"/ui/studies/{UID}").text
    assert "correct: 2 by rad" in page and "type 2 on T1" in page


def test_disc_grade_agreement_has_its_own_categories(discs, browserless, node):
    sign_in(browserless, "rad")
    _review(browserless, "disc_pfirrmann_l4_l5", "correct", "3")
    _review(browserless, "disc_modic_l4_l5", "confirm")
    _review(browserless, "disc_herniation_l4_l5", "confirm")
    _review(browserless, "disc_pfirrmann_l5_s1", "correct", "2")  # no node grade to agree
    report = browserless.get("/admin/agreement").json()["by_model"]["disc@2"]
    pfirrmann = report["disc_pfirrmann"]
    assert pfirrmann["categories"] == ["1", "2", "3", "4", "5"] and pfirrmann["n"] == 1
    assert pfirrmann["confusion"][3] == [0, 0, 1, 0, 0]  # node 4, radiologist 3
    assert report["disc_modic"]["categories"] == ["0", "1", "2", "3"]
    assert report["disc_modic"]["agreement"] == 1.0
    assert report["all disc"]["categories"] == ["present", "absent"]
    assert report["all disc"]["n"] == 1  # only the present/absent findings pool
    data = feedback.agreement_report(feedback.all_reviews(node.sessions()))
    assert feedback.low_agreement(data, 0.7, 1) == [
        "model disc@2: radiologists agree with disc Pfirrmann grade findings in 0% of 1 "
        "reviews, below the floor of 70%"]


def test_export_writes_spider_gradings_the_disc_loader_reads(discs, browserless, node,
                                                              config, tmp_path):
    from models.realdata.spider import load_gradings, realdata_root

    sign_in(browserless, "rad")
    _review(browserless, "disc_pfirrmann_l4_l5", "confirm")
    _review(browserless, "disc_modic_l4_l5", "correct", "2")
    _review(browserless, "disc_herniation_l4_l5", "confirm")
    _review(browserless, "disc_bulging_l4_l5", "correct", "present")
    _review(browserless, "disc_pfirrmann_l5_s1", "correct", "3")
    _review(browserless, "disc_modic_l5_s1", "correct", "1")
    _review(browserless, "disc_narrowing_l5_s1", "correct", "absent")
    out = tmp_path / "export"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMBAR_NODE_")}
    done = subprocess.run([sys.executable, "-m", "workers.cli", "feedback", "export",
                           "--out", str(out), "--database-url", config.db_url],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "gradings.csv (2 discs)" in done.stdout

    with (out / "gradings.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    spider = realdata_root() / "spider-midsag" / "gradings.csv"
    if spider.is_file():  # the very layout the disc grader's data is in
        with spider.open(newline="") as fh:
            assert header == next(csv.reader(fh))
    rows = list(csv.DictReader((out / "gradings.csv").open(newline="")))
    assert [(r["Patient"], r["IVD label"], r["level"]) for r in rows] == [
        ("1", "1", "L5-S1"), ("1", "2", "L4-L5")]  # SPIDER counts from the sacrum up
    assert rows[1]["UP endplate"] == "" and rows[1]["Disc narrowing"] == ""  # not reviewed

    gradings = load_gradings(out / "gradings.csv")
    assert set(gradings) == {("1", "L5-S1"), ("1", "L4-L5")}
    lower, upper = gradings[("1", "L5-S1")], gradings[("1", "L4-L5")]
    assert (lower.pfirrmann, lower.modic, lower.narrowing) == (3, 1, False)
    assert (upper.pfirrmann, upper.modic) == (4, 2)  # confirmed 4, corrected to 2
    assert upper.herniation and upper.bulging
    studies = list(csv.DictReader((out / "studies.csv").open()))
    assert studies == [{"study_id": "1", "study_instance_uid": UID, "job_ids": str(discs),
                        "model_versions": "disc@2", "reviewers": "rad"}]


def test_a_disc_reviewed_in_part_leaves_the_rest_empty(discs, browserless, node, tmp_path):
    sign_in(browserless, "rad")
    _review(browserless, "disc_herniation_l4_l5", "correct", "absent")
    with node.sessions() as s:
        counts = feedback.export(s, tmp_path)
    assert counts["discs_graded"] == 1
    row = next(csv.DictReader((tmp_path / "gradings.csv").open(newline="")))
    assert row["Disc herniation"] == "0" and row["level"] == "L4-L5"
    assert row["Pfirrman grade"] == "" and row["Modic"] == "" and row["Disc bulging"] == ""


def test_corrected_report_carries_the_radiologists_disc_findings(discs, browserless, node):
    from models.reports.sr.discs import (
        ABSENT,
        MODIC,
        MODIC_VALUES,
        PFIRRMANN,
        PFIRRMANN_VALUES,
        PRESENT,
        binary_name,
        disc_groups,
    )
    from workers.corrected_report import apply_reviews

    sign_in(browserless, "rad")
    _review(browserless, "disc_pfirrmann_l4_l5", "correct", "5", "collapsed")
    _review(browserless, "disc_modic_l4_l5", "confirm")
    _review(browserless, "disc_herniation_l4_l5", "correct", "absent")
    _review(browserless, "disc_pfirrmann_l5_s1", "correct", "2")
    _review(browserless, "disc_modic_l5_s1", "correct", "0")
    _review(browserless, "disc_bulging_l5_s1", "correct", "present")
    with node.sessions() as s:
        job = s.get(Job, discs)
        document = load_findings(s, job)
        reviews = {key: r for (_j, key), r in latest_reviews(s, [job.id]).items()}
    corrected = apply_reviews(document, reviews)
    upper, lower = corrected["disc_findings"]
    assert upper["pfirrmann"]["grade"] == 5 and upper["pfirrmann"]["grader"] == "radiologist"
    assert upper["pfirrmann"]["probabilities"] is None
    assert upper["pfirrmann"]["second_opinion"] == {
        "grader": "disc", "model_version": "2", "grade": 4, "probabilities": PFIRRMANN_PS}
    assert upper["pfirrmann"]["model_version"] == f"review-{reviews['disc_pfirrmann_l4_l5'].id}"
    assert upper["pfirrmann"]["review"]["reasons"] == ["corrected by radiologist rad (collapsed)"]
    assert upper["modic"]["type"] == 0 and "grader" not in upper["modic"]  # confirmed
    assert upper["herniation"]["present"] is False
    assert upper["herniation"]["second_opinion"]["present"] is True
    assert upper["review"]["reasons"] == [
        "Pfirrmann grade corrected by radiologist rad (collapsed)",
        "Modic type confirmed by radiologist rad", "herniation corrected by radiologist rad"]
    # both grades given: the Undetermined disc is now assessed, by the radiologist
    assert lower["assessable"] and lower["reason"] is None
    assert lower["withdrawn"] == "disc out of distribution"
    assert lower["pfirrmann"]["second_opinion"]["withdrawn"] == "disc out of distribution"
    assert document["disc_findings"][0]["pfirrmann"]["grade"] == 4  # stored one untouched

    groups = disc_groups(corrected, lambda _: generate_uid(), {})

    def evaluations(group) -> dict[str, str]:
        return {item.ConceptNameCodeSequence[0].value: item.ConceptCodeSequence[0].value
                for item in group[0].ContentSequence if item.ValueType == "CODE"}

    upper_sr, lower_sr = evaluations(groups[0]), evaluations(groups[1])
    assert upper_sr[PFIRRMANN.value] == PFIRRMANN_VALUES[5].value
    assert upper_sr[MODIC.value] == MODIC_VALUES[0].value
    assert upper_sr[binary_name("herniation").value] == ABSENT.value
    assert upper_sr[binary_name("bulging").value] == ABSENT.value  # the node's, unreviewed
    assert lower_sr[PFIRRMANN.value] == PFIRRMANN_VALUES[2].value
    assert lower_sr[MODIC.value] == MODIC_VALUES[0].value
    assert lower_sr[binary_name("bulging").value] == PRESENT.value
