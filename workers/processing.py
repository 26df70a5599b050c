"""Running one analysis job: the database side around `analyze_study`.

Kept free of Celery so it can be driven by a task, a test or the demo alike. The job row is
re-read at every step: a job already done, failed for good, or superseded by a newer run of
the same study is skipped, which makes redelivered messages harmless.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit
from dicom_node.config import NodeConfig
from dicom_node.db.models import Finding, Job, ResultObject, Study, utcnow
from dicom_node.delivery.service import create_deliveries
from dicom_node.ingest import IngestError, Ingestor
from dicom_node.studies import source_paths
from dicom_node.uids import uid_hash

log = logging.getLogger(__name__)

Analyze = Callable[[list[Path], Path], dict[str, Any]]
MAX_JOB_ATTEMPTS = 3
HEARTBEAT_SECONDS = 30.0


class JobRetry(RuntimeError):
    """The job failed but has attempts left; the queue should deliver it again."""


@contextmanager
def heartbeat(sessions: sessionmaker[Session], job_id: int,
              interval: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Touch `heartbeat_at` while the analysis runs so the reconciler leaves the job alone."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with sessions() as session, session.begin():
                    job = session.get(Job, job_id)
                    if job is not None:
                        job.heartbeat_at = utcnow()
            except Exception:  # a missed beat only matters after job_stale_seconds
                log.exception("heartbeat of job %s failed", job_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def output_dir(config: NodeConfig, study_uid: str, job_id: int) -> Path:
    digest = uid_hash(study_uid)
    return config.results_dir / digest[:2] / digest / f"job-{job_id}"


def run_job(sessions: sessionmaker[Session], config: NodeConfig, job_id: int, analyze: Analyze,
            worker_name: str = "") -> str:
    """Analyse the study of one job and record everything; returns the job's final state."""
    with sessions() as session, session.begin():
        job = session.get(Job, job_id)
        if job is None:
            raise ValueError(f"no job with id {job_id}")
        study = session.get(Study, job.study_id)
        if job.superseded_by is not None:
            audit.record(session, "job.skipped", study_uid=study.study_instance_uid,
                         actor=worker_name, job_id=job.id, reason="superseded by a newer run")
            return "superseded"
        if job.state in ("done", "failed"):
            return job.state
        now = utcnow()
        job.state, job.attempts = "running", job.attempts + 1
        job.started_at = job.heartbeat_at = now
        job.worker = worker_name[:128]
        files = source_paths(session, study)
        study_uid, patient_id = study.study_instance_uid, study.patient_id
        out = output_dir(config, study_uid, job.id)
        job.output_dir = str(out)
        attempts = job.attempts
        audit.record(session, "job.started", study_uid=study_uid, patient_id=patient_id,
                     actor=worker_name, job_id=job.id, attempt=attempts, instances=len(files))
    try:
        with heartbeat(sessions, job_id):
            document = analyze(files, out)
    except Exception as exc:
        final = attempts >= MAX_JOB_ATTEMPTS
        with sessions() as session, session.begin():
            job = session.get(Job, job_id)
            job.state = "failed" if final else "queued"
            job.reason = f"{type(exc).__name__}: {exc}"[:4000]
            job.finished_at = utcnow()
            audit.record(session, "job.failed", study_uid=study_uid, patient_id=patient_id,
                         actor=worker_name, job_id=job_id, attempt=attempts, final=final,
                         error=job.reason)
        log.exception("job %s failed (attempt %d)", job_id, attempts)
        if final:
            return "failed"
        raise JobRetry(str(exc)) from exc
    return _record(sessions, config, job_id, document, out, worker_name)


def _record(sessions: sessionmaker[Session], config: NodeConfig, job_id: int,
            document: dict[str, Any], out: Path, worker_name: str) -> str:
    outputs = {str(k): out / str(v) for k, v in (document.get("outputs") or {}).items()}
    if (out / "findings.json").is_file():
        outputs.setdefault("findings", out / "findings.json")
    ingestor = Ingestor(config, sessions)
    dicom_meta: dict[str, tuple[str, str, str]] = {}
    for kind, path in outputs.items():
        if path.suffix != ".dcm" or not path.is_file():
            continue
        try:
            ingestor.store(path.read_bytes(), source="result")
        except IngestError as exc:
            log.error("result %s of job %s not indexed: %s", path.name, job_id, exc.reason)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        dicom_meta[kind] = (str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                            str(ds.SeriesInstanceUID))
    with sessions() as session, session.begin():
        job = session.get(Job, job_id)
        study = session.get(Study, job.study_id)
        job.state, job.finished_at = "done", utcnow()
        job.result_status, job.reason = document.get("status"), document.get("reason")
        job.stage_timings = document.get("timings_s")
        job.model_versions = document.get("models")
        for f in document.get("findings") or []:
            probs = list(f.get("probabilities") or [None, None, None])
            session.add(Finding(job_id=job_id, level=f["level"], condition=f["condition"],
                                side=f.get("side"), grade=f.get("grade"),
                                p_normal_mild=probs[0], p_moderate=probs[1], p_severe=probs[2],
                                grader=f.get("grader"), assessable=bool(f.get("assessable")),
                                reason=f.get("reason")))
        for kind, path in outputs.items():
            if not path.is_file():
                continue
            sop_class, sop_uid, series_uid = dicom_meta.get(kind, (None, None, None))
            session.add(ResultObject(job_id=job_id, kind=kind[:16], sop_class_uid=sop_class,
                                     sop_instance_uid=sop_uid, series_instance_uid=series_uid,
                                     path=str(path), sha256=_sha256(path)))
        superseded = job.superseded_by is not None
        if study.state == "queued" and not superseded:
            study.state = "processed"
        audit.record(session, "job.finished", study_uid=study.study_instance_uid,
                     patient_id=study.patient_id, actor=worker_name, job_id=job_id,
                     status=job.result_status, reason=job.reason, findings=len(
                         document.get("findings") or []), objects=sorted(outputs),
                     timings_s=job.stage_timings, superseded=superseded)
        if not superseded and job.result_status != "rejected" and dicom_meta:
            create_deliveries(session, config, job, study)
    return "done"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
