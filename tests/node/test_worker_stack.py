"""A real Celery worker on real Redis with PostgreSQL, fed by the node over C-STORE."""

from __future__ import annotations

from _harness import wait_for
from nodekit import storescu, write_study
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, Job, Study
from dicom_node.serve import Node


def test_worker_on_redis_and_postgres_runs_the_job(tmp_path, stack_config, start_worker):
    node = Node(stack_config)
    node.start()
    try:
        start_worker(stack_config)
        uid, files = write_study(tmp_path / "study", n=6)
        assert storescu(stack_config.dimse_port, files).returncode == 0

        def finished_job():
            with node.sessions() as s:
                study = s.scalar(select(Study).where(Study.study_instance_uid == uid))
                job = study and s.scalar(select(Job).where(Job.study_id == study.id))
                return job if job is not None and job.state in ("done", "failed") else None

        job = wait_for(finished_job, 120, "the job to finish")
        with node.sessions() as s:
            story = [e.event_type for e in s.scalars(
                select(AuditEvent).where(AuditEvent.study_instance_uid == uid)
                .order_by(AuditEvent.id))]
    finally:
        node.stop()
    assert story[0] == "study.first_instance"
    assert story.count("instance.stored") == 18
    assert "study.closed" in story and "job.started" in story
    # the pipeline's outcome is recorded either way: results, or the reason it could not run
    assert ("job.finished" in story) if job.state == "done" else job.reason
