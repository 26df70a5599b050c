"""The product path on real peers: a PACS sends a synthetic study, a Celery worker on Redis
runs the imaging pipeline, and the SR, SEG and key image come back to the PACS.

Needs the registered segmentation model (models/weights); without it the pipeline cannot
run and these tests are skipped with that reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pydicom
import pytest
from _harness import free_port, wait_for
from nodekit import Storescp, segmentation_model_missing, storescu, wait_port
from pynetdicom import sop_class as sc
from sqlalchemy import select

from dicom_node.config import parse_destinations
from dicom_node.db import migrate
from dicom_node.db.models import AuditEvent, Delivery, Finding, Job, Study
from dicom_node.http.multipart import build
from dicom_node.serve import Node

pytestmark = [pytest.mark.slow, pytest.mark.skipif(segmentation_model_missing() is not None,
                                                   reason=str(segmentation_model_missing()))]
SEED = 11


@pytest.fixture()
def synthetic_study(synth_study) -> tuple[str, list[Path], dict]:
    """One small synthetic study (shared fixture of tests/conftest.py), its files and truth."""
    folder = synth_study(seed=SEED, matrix=128)
    truth = json.loads((folder / "truth.json").read_text())
    return truth["study_instance_uid"], sorted((folder / "dicom").rglob("*.dcm")), truth


def _delivered(node: Node, uid: str):
    def check():
        with node.sessions() as s:
            study = s.scalar(select(Study).where(Study.study_instance_uid == uid))
            job = study and s.scalar(select(Job).where(Job.study_id == study.id,
                                                       Job.superseded_by.is_(None)))
            if job is not None and job.state == "failed":
                raise AssertionError(f"job failed: {job.reason}")
            rows = list(s.scalars(select(Delivery).where(Delivery.job_id == job.id))) if (
                job) else []
            return (job, rows) if rows and all(d.status == "delivered" for d in rows) else None
    return check


def _sop_classes(files: list[Path]) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files}


def test_storescu_to_worker_on_redis_postgres_to_storescp(tmp_path, stack_config,
                                                          start_worker, synthetic_study):
    uid, files, truth = synthetic_study
    pacs_port = free_port()
    config = stack_config.replace(
        destinations=parse_destinations(f"PACS@127.0.0.1:{pacs_port}"))
    pacs = Storescp(tmp_path / "pacs", pacs_port)
    node = Node(config)
    node.start()
    try:
        start_worker(config)
        sent = storescu(config.dimse_port, files, "PACS", "LUMBARNODE", "--no-halt")
        corrupt = len(truth.get("corrupt_files", []))
        assert sent.stderr.count("Received Store Response (Success)") == len(files) - corrupt
        job, deliveries = wait_for(_delivered(node, uid), 400, "results delivered",
                                   interval=1.0)
        received = pacs.files()
        with node.sessions() as s:
            findings = list(s.scalars(select(Finding).where(Finding.job_id == job.id)))
            story = [e.event_type for e in s.scalars(select(AuditEvent).where(
                AuditEvent.study_instance_uid == uid).order_by(AuditEvent.id))]
    finally:
        node.stop()
        pacs.stop()
    assert job.result_status in ("complete", "partial")
    assert len(findings) == 25
    classes = _sop_classes(received)
    assert str(sc.Comprehensive3DSRStorage) in classes or str(sc.ComprehensiveSRStorage) in classes
    assert str(sc.SegmentationStorage) in classes or str(sc.LabelMapSegmentationStorage) in classes
    assert str(sc.KeyObjectSelectionDocumentStorage) in classes
    for event in ("study.closed", "job.started", "job.finished", "delivery.sent"):
        assert event in story
    assert story.index("job.finished") < story.index("delivery.sent")


def test_stow_in_and_stow_out(tmp_path, node_config, redis_prefix, start_worker,
                              synthetic_study):
    uid, files, truth = synthetic_study
    receiver_config = node_config.replace(data_dir=tmp_path / "receiver", http_port=free_port(),
                                          dimse_port=free_port(), api_token="receiver-token")
    migrate.upgrade(receiver_config.db_url)
    receiver = Node(receiver_config, scheduler=False)
    receiver.start()
    url = f"http://127.0.0.1:{receiver_config.http_port}/dicomweb"
    config = node_config.replace(
        broker_url="redis://127.0.0.1:6379/0", broker_key_prefix=redis_prefix,
        destinations=parse_destinations(url), destination_token="receiver-token",
        scheduler_interval_seconds=0.3, job_retry_delay_seconds=0.5)
    node = Node(config)
    node.start()
    try:
        start_worker(config)
        wait_port(config.http_port)
        body, ctype = build([f.read_bytes() for f in files], "application/dicom")
        r = httpx.post(f"http://127.0.0.1:{config.http_port}/dicomweb/studies", content=body,
                       headers={"Content-Type": ctype, "Authorization": "Bearer secret-token"},
                       timeout=120)
        assert r.status_code in (200, 202), r.text
        wait_for(_delivered(node, uid), 400, "results delivered", interval=1.0)
        receiver.indexer.flush()  # the receiver answered from its spool; its index follows
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer receiver-token"}) as c:
            series = c.get(f"/studies/{uid}/series").json()
    finally:
        node.stop()
        receiver.stop()
    modalities = {s["00080060"]["Value"][0] for s in series if "00080060" in s}
    assert {"SR", "SEG", "KO"} <= modalities


def test_demo_command(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "workers.cli", "demo", "--out",
                           str(tmp_path / "demo"), "--timeout", "400"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(25 findings)" in done.stdout and "delivered after" in done.stdout
    assert len(list((tmp_path / "demo" / "received").glob("*.dcm"))) == 4
    assert (tmp_path / "demo" / "results" / "overlay.png").is_file()
