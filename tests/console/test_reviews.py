"""Reviews over HTTP on a study whose analysis is in the database, and what they become:
agreement (kappa, confusion), the RSNA-layout export, metrics, the corrected-report request
queued through the outbox, the append-only guard."""

from __future__ import annotations

import csv

import httpx
import pytest
from consolekit import add_analysed_study, csrf_of, sign_in
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from dicom_node import feedback
from dicom_node.db.models import (
    AuditEvent,
    OutboxMessage,
    ReportVersion,
    Review,
)
from dicom_node.tasks import CORRECTED_REPORT
from lumbar_common.vocabulary import finding_keys

UID = "1.2.826.0.1.3680043.10.543.777"


def _findings_doc() -> dict:
    """A findings.json as the pipeline writes it: 25 findings (L4-L5 canal Severe, one
    disagreement, one Undetermined, the rest Normal/Mild) and one graded disc."""
    findings = []
    for condition, side, level in finding_keys():
        f = {"level": level, "condition": condition, "side": side, "grade": "Normal/Mild",
             "probabilities": [0.9, 0.08, 0.02], "assessable": True, "reason": None,
             "grader": "measurement", "model_version": "1.3",
             "measurements": [], "review": {"required": False, "reasons": []}}
        if condition == "spinal_canal_stenosis" and level == "L4-L5":
            f.update(grade="Severe", probabilities=[0.05, 0.15, 0.8], measurements=[
                {"name": "canal_ap_diameter", "value": 6.1, "unit": "mm"}])
        if condition == "spinal_canal_stenosis" and level == "L3-L4":
            f["review"] = {"required": True, "reasons": ["graders disagree: learned Moderate"]}
        if side == "left" and condition == "subarticular_stenosis" and level == "L5-S1":
            f.update(grade=None, probabilities=None, assessable=False, grader=None,
                     reason="no axial T2 at this level")
        findings.append(f)
    return {"status": "complete", "study_instance_uid": UID, "findings": findings,
            "disc_findings": [{"level": "L4-L5", "assessable": True, "model_version": "2",
                               "pfirrmann": {"grade": 4}, "modic": {"type": 0},
                               "herniation": {"present": True, "probability": 0.7}}],
            "notice": "AI result — not for diagnosis without review by a radiologist"}


@pytest.fixture()
def analysed(node, config, tmp_path):
    return add_analysed_study(node.sessions, UID, _findings_doc(), tmp_path,
                              sr_sop_uid="2.25.1")


def _review(client: httpx.Client, key: str, verdict: str, value: str = "",
            comment: str = "") -> httpx.Response:
    page = client.get(f"/ui/studies/{UID}")
    return client.post(f"/ui/studies/{UID}/reviews", data={
        "csrf_token": csrf_of(page.text), "finding_key": key, "verdict": verdict,
        "value": value, "comment": comment})


def test_kappa_of_a_known_confusion_matrix():
    # textbook example: 50 pairs, observed 0.7, expected 0.5 -> kappa 0.4
    assert feedback.cohen_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)
    three = [[10, 2, 0], [1, 5, 1], [0, 1, 4]]  # po 19/24; pe from the margins
    n, po = 24, 19 / 24
    pe = sum(sum(three[i]) * sum(r[i] for r in three) for i in range(3)) / n ** 2
    assert feedback.cohen_kappa(three) == pytest.approx((po - pe) / (1 - pe))
    assert feedback.cohen_kappa([[7, 0], [0, 0]]) is None  # one category only: undefined
    assert feedback.cohen_kappa([[0, 0], [0, 0]]) is None


def test_review_page_lists_every_finding_with_evidence(analysed, browserless, node):
    sign_in(browserless, "rad")
    page = browserless.get(f"/ui/studies/{UID}")
    assert page.status_code == 200
    # 25 stenosis findings; the disc's Pfirrmann grade, Modic type and one finding
    assert page.text.count('class="node-value"') == 25 + 3
    assert "canal_ap_diameter 6.1 mm" in page.text and "graders disagree" in page.text
    assert f"/viewer/viewer?StudyInstanceUIDs={UID}" in page.text
    worklist = browserless.get("/ui/").text
    assert UID in worklist and "no-destination" in worklist
    assert "graders disagree" in worklist and "Undetermined" in worklist
    with node.sessions() as s:
        viewed = s.scalar(select(AuditEvent).where(AuditEvent.event_type == "ui.study_viewed"))
    assert viewed.actor == "rad" and viewed.study_instance_uid == UID


def test_confirm_and_correct_are_stored_audited_and_validated(analysed, browserless, node):
    sign_in(browserless, "rad")
    canal = "spinal_canal_stenosis_l4_l5"
    assert _review(browserless, canal, "confirm").status_code == 303
    assert _review(browserless, canal, "correct", "Moderate", "not that tight"
                   ).status_code == 303
    assert _review(browserless, canal, "correct", "Severe").status_code == 400  # = node
    assert _review(browserless, canal, "correct", "Huge").status_code == 400
    assert _review(browserless, "no_such_finding", "confirm").status_code == 400
    undetermined = "left_subarticular_stenosis_l5_s1"
    assert _review(browserless, undetermined, "confirm").status_code == 400
    assert _review(browserless, undetermined, "correct", "Moderate").status_code == 303
    assert _review(browserless, "disc_herniation_l4_l5", "correct", "absent"
                   ).status_code == 303
    r = browserless.post(f"/ui/studies/{UID}/reviews", data={
        "finding_key": canal, "verdict": "confirm"})
    assert r.status_code == 403  # no CSRF token
    with node.sessions() as s:
        reviews = list(s.scalars(select(Review).order_by(Review.id)))
        events = list(s.scalars(select(AuditEvent).where(
            AuditEvent.event_type == "review.recorded")))
    assert [(r.finding_key, r.verdict, r.corrected_value) for r in reviews] == [
        (canal, "confirm", None), (canal, "correct", "Moderate"),
        (undetermined, "correct", "Moderate"), ("disc_herniation_l4_l5", "correct", "absent")]
    assert reviews[1].node_value == "Severe" and reviews[1].reviewer == "rad"
    assert reviews[1].model_version == "measurement@1.3"
    assert [e.actor for e in events] == ["rad"] * 4
    page = browserless.get(f"/ui/studies/{UID}").text
    assert "correct: Moderate by rad" in page and "not that tight" in page


def test_reviews_are_append_only(analysed, browserless, node, config):
    sign_in(browserless, "rad")
    _review(browserless, "spinal_canal_stenosis_l4_l5", "confirm")
    from dicom_node.db.session import make_engine

    engine = make_engine(config.db_url)
    try:
        for statement in ("UPDATE reviews SET verdict = 'correct'", "DELETE FROM reviews"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def test_agreement_export_and_metrics(analysed, browserless, node, tmp_path):
    sign_in(browserless, "rad")
    _review(browserless, "spinal_canal_stenosis_l4_l5", "correct", "Moderate")
    _review(browserless, "spinal_canal_stenosis_l3_l4", "confirm")
    _review(browserless, "left_neural_foraminal_narrowing_l1_l2", "correct", "Severe")
    _review(browserless, "left_subarticular_stenosis_l5_s1", "correct", "Moderate")
    _review(browserless, "disc_herniation_l4_l5", "confirm")
    data = browserless.get("/admin/agreement").json()  # the session reads the admin GET
    stats = data["by_model"]["measurement@1.3"]["all stenosis"]
    assert stats["n"] == 3  # the Undetermined one has no node grade to agree with
    assert stats["agreement"] == pytest.approx(1 / 3)
    assert stats["confusion"] == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert data["by_model"]["disc@2"]["disc_herniation"]["confusion"] == [[1, 0], [0, 0]]
    assert httpx.get(f"{browserless.base_url}/admin/agreement").status_code == 401
    metrics = httpx.get(f"{browserless.base_url}/metrics").text
    assert 'lumbar_reviews_total{verdict="correct"} 3.0' in metrics
    assert 'lumbar_review_agreement{finding="all stenosis",model_version="measurement@1.3"}' \
        in metrics

    out = tmp_path / "export"
    with node.sessions() as s:
        counts = feedback.export(s, out)
    assert counts == {"studies": 1, "labels": 4, "disc_labels": 1, "discs_graded": 1}
    rows = list(csv.reader((out / "train.csv").open()))
    assert rows[0][0] == "study_id" and len(rows[0]) == 26
    assert rows[0][1] == "spinal_canal_stenosis_l1_l2"
    labels = dict(zip(rows[0], rows[1], strict=True))
    assert labels["spinal_canal_stenosis_l4_l5"] == "Moderate"
    assert labels["spinal_canal_stenosis_l3_l4"] == "Normal/Mild"
    assert labels["left_neural_foraminal_narrowing_l1_l2"] == "Severe"
    assert labels["left_subarticular_stenosis_l5_s1"] == "Moderate"
    assert labels["spinal_canal_stenosis_l1_l2"] == ""  # not reviewed: no label
    studies = list(csv.DictReader((out / "studies.csv").open()))
    assert studies[0]["study_instance_uid"] == UID and studies[0]["reviewers"] == "rad"
    discs = list(csv.DictReader((out / "discs.csv").open()))
    assert discs == [{"study_id": "1", "level": "L4-L5", "finding": "herniation",
                      "value": "present", "verdict": "confirm", "reviewer": "rad"}]


@pytest.mark.console_config(agreement_min_reviews=3, agreement_floor=0.7)
def test_low_agreement_warns_on_the_worklist(tmp_path, analysed, browserless, node):
    sign_in(browserless, "rad")
    for key in ("spinal_canal_stenosis_l4_l5", "spinal_canal_stenosis_l1_l2"):
        _review(browserless, key, "correct", "Moderate")
    for key in ("disc_pfirrmann_l4_l5", "disc_modic_l4_l5", "disc_herniation_l4_l5"):
        _review(browserless, key, "confirm")  # disc@2: 3 of 3 agree, above the floor
    page = browserless.get("/ui/").text
    assert "below the floor" not in page  # 2 stenosis reviews < AGREEMENT_MIN_REVIEWS
    _review(browserless, "spinal_canal_stenosis_l2_l3", "correct", "Severe")
    page = browserless.get("/ui/")
    assert page.status_code == 200
    warning = ('<p class="warning" role="alert">model measurement@1.3: radiologists agree '
               'with all stenosis findings in 0% of 3 reviews, below the floor of 70%</p>')
    assert warning in page.text
    assert page.text.count('class="warning"') == 1  # the disc model is not warned about
    assert warning in browserless.get("/ui/agreement").text


def test_corrected_report_is_queued_after_a_correction(analysed, browserless, node):
    sign_in(browserless, "rad")
    page = browserless.get(f"/ui/studies/{UID}").text
    r = browserless.post(f"/ui/studies/{UID}/corrected-report",
                         data={"csrf_token": csrf_of(page)})
    assert r.status_code == 400  # nothing corrected yet
    _review(browserless, "spinal_canal_stenosis_l4_l5", "correct", "Moderate")
    page = browserless.get(f"/ui/studies/{UID}").text
    assert browserless.post(f"/ui/studies/{UID}/corrected-report", data={}).status_code == 403
    r = browserless.post(f"/ui/studies/{UID}/corrected-report",
                         data={"csrf_token": csrf_of(page)})
    assert r.status_code == 303
    with node.sessions() as s:
        version = s.scalar(select(ReportVersion))
        message = s.scalar(select(OutboxMessage).where(
            OutboxMessage.task_name == CORRECTED_REPORT))
    assert version.state == "queued" and version.supersedes_sop_instance_uid == "2.25.1"
    assert version.requested_by == "rad"
    assert message.payload == {"report_version_id": version.id} and message.queue == "gpu"
