"""Claiming and finishing an analysis job: one run per job however often its message comes."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydicom
from load import UID_ROOT, mr_instance
from nodekit import write_study
from pydicom.uid import generate_uid
from sqlalchemy import func, select, update

from dicom_node.config import parse_destinations
from dicom_node.db.models import AuditEvent, Delivery, Finding, Job, Series, utcnow
from dicom_node.db.session import make_engine, make_sessionmaker
from dicom_node.ingest import Ingestor
from dicom_node.studies import close_due_studies
from workers.processing import RUNNING_ELSEWHERE, TAKEN_OVER, run_job

DESTINATIONS = "PACS@127.0.0.1:1,http://127.0.0.1:1/dicom-web"


class Analysis:
    """A real analysis stand-in: waits, then writes a findings document and one DICOM result
    object into the output folder, as `analyze_study` does."""

    def __init__(self, delay: float = 0.0, grade: str = "Severe",
                 during: Any = None, fail: bool = False) -> None:
        self.delay, self.grade, self.during, self.fail = delay, grade, during, fail
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, files: list[Path], out: Path) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        if self.during is not None:
            self.during()
        if self.fail:
            raise RuntimeError("model crashed")
        out.mkdir(parents=True, exist_ok=True)
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        result = mr_instance(study_uid, generate_uid(UID_ROOT), 0, plane="sagittal", te=100.0,
                             tr=3000.0, description="AI RESULT")
        result.save_as(out / "result.dcm", enforce_file_format=True)
        document = {
            "status": "complete", "reason": None, "models": {"stand-in": "1"},
            "timings_s": {"total": self.delay}, "outputs": {"sr": "result.dcm"},
            "findings": [
                {"level": "L4-L5", "condition": "spinal_canal_stenosis", "grade": self.grade,
                 "probabilities": [0.1, 0.2, 0.7], "grader": "stand-in", "assessable": True},
                {"level": "L5-S1", "condition": "spinal_canal_stenosis", "grade": "Normal/Mild",
                 "probabilities": [0.8, 0.1, 0.1], "grader": "stand-in", "assessable": True,
                 "disagreement": {"bands": 2, "grades": {"measurement": "Normal/Mild",
                                                         "learned": "Severe"}},
                 "second_opinion": {"grader": "learned", "grade": "Severe", "withdrawn": None},
                 "review": {"required": True, "reasons": [
                     "graders disagree by 2 bands (measurement Normal/Mild, learned Severe)"]}},
            ],
            "review_required": 1,
        }
        (out / "findings.json").write_text(json.dumps(document))
        return document


def _queued_job(tmp_path, config, sessions) -> int:
    _, files = write_study(tmp_path / "study", n=4)
    ingestor = Ingestor(config, sessions)
    for f in files:
        ingestor.store(f.read_bytes(), source="dimse", ae_title="PACS", ip="127.0.0.1")
    close_due_studies(sessions, config, utcnow() + timedelta(seconds=5))
    with sessions() as s:
        return s.scalar(select(Job.id))


def _events(sessions, job_id: int) -> list[AuditEvent]:
    with sessions() as s:
        return [e for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))
                if (e.detail or {}).get("job_id") == job_id]


def _recorded(sessions, job_id: int) -> tuple[list[str], Counter[str], int]:
    with sessions() as s:
        grades = sorted(s.scalars(select(Finding.grade).where(Finding.job_id == job_id)))
        per_dest = Counter(s.scalars(select(Delivery.destination)
                                     .where(Delivery.job_id == job_id)))
        result_series = s.scalar(select(func.count(Series.id)).where(Series.is_result))
    return grades, per_dest, result_series


def test_two_deliveries_of_one_message_run_the_analysis_once(tmp_path, node_config, own_pg_url):
    config = node_config.replace(database_url=own_pg_url,
                                 destinations=parse_destinations(DESTINATIONS))
    engine = make_engine(own_pg_url)
    try:
        sessions = make_sessionmaker(engine)
        job_id = _queued_job(tmp_path, config, sessions)
        analysis = Analysis(delay=1.5)
        start = threading.Barrier(2)
        results: dict[str, str] = {}

        def worker(name: str) -> None:
            start.wait()
            try:
                results[name] = run_job(sessions, config, job_id, analysis, worker_name=name)
            except Exception as exc:  # reported through the assertion below
                results[name] = f"raised {type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(results.values()) == ["done", RUNNING_ELSEWHERE]
        assert analysis.calls == 1
        events = Counter(e.event_type for e in _events(sessions, job_id))
        assert (events["job.started"], events["job.finished"], events["job.skipped"]) == (1, 1, 1)
        # the disagreement is in the audit trail with both grades, once
        [flagged] = [e for e in _events(sessions, job_id)
                     if e.event_type == "finding.review_required"]
        assert (flagged.detail["level"], flagged.detail["grade"]) == ("L5-S1", "Normal/Mild")
        assert flagged.detail["disagreement"]["grades"] == {"measurement": "Normal/Mild",
                                                            "learned": "Severe"}
        assert flagged.detail["second_opinion"]["grade"] == "Severe"
        [skipped] = [e for e in _events(sessions, job_id) if e.event_type == "job.skipped"]
        assert "live heartbeat" in skipped.detail["reason"]
        grades, per_dest, result_series = _recorded(sessions, job_id)
        assert grades == ["Normal/Mild", "Severe"]
        assert per_dest == {"PACS@127.0.0.1:1": 1, "http://127.0.0.1:1/dicom-web": 1}
        assert result_series == 1
        with sessions() as s:
            job = s.get(Job, job_id)
        assert (job.state, job.attempts) == ("done", 1)
    finally:
        engine.dispose()


def test_message_for_a_job_running_elsewhere_returns_without_analysis(tmp_path, node_config,
                                                                      db_sessions):
    sessions = db_sessions
    job_id = _queued_job(tmp_path, node_config, sessions)
    with sessions() as s, s.begin():
        job = s.get(Job, job_id)
        job.state, job.attempts, job.worker = "running", 1, "other-host:task-1"
        job.heartbeat_at = utcnow() - timedelta(seconds=5)
    analysis = Analysis()
    assert run_job(sessions, node_config, job_id, analysis, "this-host") == RUNNING_ELSEWHERE
    assert analysis.calls == 0
    with sessions() as s:
        job = s.get(Job, job_id)
    assert (job.state, job.attempts, job.worker) == ("running", 1, "other-host:task-1")
    [skipped] = [e for e in _events(sessions, job_id) if e.event_type == "job.skipped"]
    assert "other-host:task-1" in skipped.detail["reason"]
    # done, failed and superseded jobs are left alone as before
    with sessions() as s, s.begin():
        s.get(Job, job_id).state = "done"
    assert run_job(sessions, node_config, job_id, analysis, "this-host") == "done"
    assert analysis.calls == 0


def test_stalled_worker_whose_claim_was_taken_over_records_nothing(tmp_path, node_config,
                                                                   db_sessions):
    """Worker A stalls past JOB_STALE_SECONDS; worker B takes the job over and finishes it;
    when A's analysis finally returns, its findings and deliveries are discarded."""
    sessions = db_sessions
    config = node_config.replace(destinations=parse_destinations(DESTINATIONS))
    job_id = _queued_job(tmp_path, config, sessions)
    outcome: dict[str, str] = {}

    def stall_then_lose_the_job() -> None:
        with sessions() as s, s.begin():
            s.execute(update(Job).where(Job.id == job_id)
                      .values(heartbeat_at=utcnow() - timedelta(seconds=config.job_stale_seconds
                                                                + 60)))
        outcome["b"] = run_job(sessions, config, job_id, Analysis(grade="Moderate"), "worker-b")

    stalled = Analysis(grade="Severe", during=stall_then_lose_the_job)
    assert run_job(sessions, config, job_id, stalled, "worker-a") == TAKEN_OVER
    assert outcome["b"] == "done"
    with sessions() as s:
        job = s.get(Job, job_id)
    assert (job.state, job.attempts, job.worker) == ("done", 2, "worker-b")
    assert job.output_dir.endswith("attempt-2")
    events = _events(sessions, job_id)
    assert [e.event_type for e in events].count("job.finished") == 1
    [skipped] = [e for e in events if e.event_type == "job.skipped"]
    assert skipped.actor == "worker-a" and "no longer owns" in skipped.detail["reason"]
    grades, per_dest, result_series = _recorded(sessions, job_id)
    assert grades == ["Moderate", "Normal/Mild"]  # worker B's findings only
    assert set(per_dest.values()) == {1} and len(per_dest) == 2
    assert result_series == 1  # A's result object was not indexed into the study


def test_failure_after_takeover_neither_requeues_nor_retries(tmp_path, node_config,
                                                             db_sessions):
    sessions = db_sessions
    job_id = _queued_job(tmp_path, node_config, sessions)

    def requeued_by_reconciler() -> None:
        with sessions() as s, s.begin():
            s.execute(update(Job).where(Job.id == job_id).values(state="queued"))

    failing = Analysis(during=requeued_by_reconciler, fail=True)
    assert run_job(sessions, node_config, job_id, failing, "worker-a") == TAKEN_OVER
    with sessions() as s:
        job = s.get(Job, job_id)
    assert (job.state, job.reason) == ("queued", None)
    assert "job.failed" not in [e.event_type for e in _events(sessions, job_id)]
