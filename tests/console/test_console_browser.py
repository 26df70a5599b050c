"""The review console in Debian's Chromium against the whole product on real peers.

A PACS (dcmtk storescp) receives what a node (`lumbar-node serve`) and a Celery worker on
PostgreSQL and Redis make of a synthetic study. A radiologist signs in, opens the study
from the worklist, corrects one finding and sends the corrected report: the PACS receives a
new SR whose Predecessor Documents Sequence names the SR it had. An admin then finds the
correction in the audit trail, and `lumbar-node feedback export` has it as a label.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import _harness
import pydicom
import pytest
from consolekit import PASSWORDS, add_users
from nodekit import segmentation_model_missing
from sqlalchemy import select

from dicom_node.db.models import Delivery, Job, ReportVersion, Study
from lumbar_common.vocabulary import GRADES

pytestmark = pytest.mark.slow
SEED = 11


def _delivered(stack: _harness.Stack, uid: str):
    def check():
        with stack.sessions() as s:
            study = s.scalar(select(Study).where(Study.study_instance_uid == uid))
            job = study and s.scalar(select(Job).where(Job.study_id == study.id)
                                     .order_by(Job.id.desc()))
            if job is not None and job.state == "failed":
                raise AssertionError(f"job failed: {job.reason}")
            rows = list(s.scalars(select(Delivery).where(Delivery.job_id == job.id))) if (
                job) else []
            return job if rows and all(d.status == "delivered" for d in rows) else None
    return check


def _srs(pacs: _harness.Storescp) -> dict[str, pydicom.Dataset]:
    found = {}
    for path in pacs.files():
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # a file still being written
            continue
        if ds.Modality == "SR":
            found[str(ds.SOPInstanceUID)] = ds
    return found


@pytest.mark.skipif(segmentation_model_missing() is not None,
                    reason=str(segmentation_model_missing()))
def test_radiologist_corrects_a_finding_and_the_pacs_gets_a_new_sr_version(
        tmp_path, synth_study, chromium_browser):
    folder = synth_study(seed=SEED, matrix=128)
    uid = json.loads((folder / "truth.json").read_text())["study_instance_uid"]
    files = sorted((folder / "dicom").rglob("*.dcm"))
    with _harness.throwaway_database(prefix="lumbar_console_test_") as db_url, _harness.Stack(
            tmp_path, db_url, "redis://127.0.0.1:6379/0",
            broker_key_prefix=f"lumbar-console-{secrets.token_hex(4)}:") as stack:
        _harness.storescu(stack.config.dimse_port, files, extra=["--no-halt"])
        analysis = _harness.wait_for(_delivered(stack, uid), 600, "results delivered",
                                     interval=1.0)
        original = _srs(stack.pacs)
        assert len(original) == 1
        original_uid = next(iter(original))
        add_users(db_url)
        base = f"http://127.0.0.1:{stack.config.http_port}"

        context = chromium_browser.new_context(base_url=base)
        page = context.new_page()
        page.goto("/ui/")
        assert "/ui/login" in page.url  # not signed in yet
        page.fill("input[name=username]", "rad")
        page.fill("input[name=password]", PASSWORDS["rad"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/ui/")
        row = page.locator(f"tr[data-study='{uid}']")
        assert row.locator("td.status-delivered, td.status-partial").count() == 1
        row.locator("a", has_text="Review").click()
        page.wait_for_url(f"**/ui/studies/{uid}")
        assert page.locator("#open-viewer").get_attribute("href") == (
            f"/viewer/viewer?StudyInstanceUIDs={uid}")
        assert page.locator("img.key").evaluate("img => img.naturalWidth") > 0
        assert page.locator("#findings tbody tr").count() >= 25

        key = "spinal_canal_stenosis_l4_l5"
        finding = page.locator(f"tr[data-key='{key}']")
        node_value = finding.locator("td.node-value").inner_text().strip()
        corrected = next(g for g in reversed(GRADES) if g != node_value)
        finding.locator("select[name=value]").select_option(corrected)
        finding.locator("input[name=comment]").fill("canal narrower on axial")
        finding.locator("button[value=correct]").click()
        page.wait_for_url(f"**/ui/studies/{uid}#{key}")
        state = page.locator(f"tr[data-key='{key}'] td.review-state").inner_text()
        assert f"correct: {corrected} by rad" in state
        page.click("#send-corrected")
        page.wait_for_url(f"**/ui/studies/{uid}#versions")
        assert page.locator("tr.report-version").count() == 1

        def new_sr():
            with stack.sessions() as s:
                version = s.scalar(select(ReportVersion))
                assert version.state != "failed", version.error
            return {k: v for k, v in _srs(stack.pacs).items() if k != original_uid} or None

        received = _harness.wait_for(new_sr, 300, "the corrected SR at the PACS", interval=1.0)
        sr = next(iter(received.values()))
        predecessors = [str(ref.ReferencedSOPInstanceUID)
                        for study in sr.PredecessorDocumentsSequence
                        for series in study.ReferencedSeriesSequence
                        for ref in series.ReferencedSOPSequence]
        assert predecessors == [original_uid]
        assert str(sr.StudyInstanceUID) == uid
        page.reload()
        assert "built" in page.locator("tr.report-version td.state").inner_text()
        context.close()

        admin = chromium_browser.new_context(base_url=base)
        page = admin.new_page()
        page.goto("/ui/login")
        page.fill("input[name=username]", "boss")
        page.fill("input[name=password]", PASSWORDS["boss"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/ui/")
        page.goto(f"/ui/admin/audit?study={uid}&event_type=review.recorded")
        audit_rows = page.locator("#audit tbody tr")
        assert audit_rows.count() == 1
        assert "rad" in audit_rows.inner_text() and corrected in audit_rows.inner_text()
        with page.expect_download() as download:
            page.click("#audit-csv")
        assert "review.recorded" in Path(download.value.path()).read_text()
        admin.close()

        out = tmp_path / "export"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUMBAR_NODE_")}
        done = subprocess.run([sys.executable, "-m", "workers.cli", "feedback", "export",
                               "--out", str(out), "--database-url", db_url],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        labels = list(csv.DictReader((out / "train.csv").open()))
        studies = list(csv.DictReader((out / "studies.csv").open()))
        assert [r["study_instance_uid"] for r in studies] == [uid]
        assert labels[0][key] == corrected
        assert str(analysis.id) in studies[0]["job_ids"]
