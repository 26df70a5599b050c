"""Running one analysis job: the database side around `analyze_study`.

Kept free of Celery so it can be driven by a task, a test or the demo alike. The job row is
re-read at every step: a job already done, failed for good, or superseded by a newer run of
the same study is skipped, which makes redelivered messages harmless.

Starting is one conditional UPDATE (the claim), so two deliveries of the same message (an
`acks_late` redelivery, a reconciler re-queue) cannot both run the analysis: the second
finds the job running with a fresh heartbeat and backs off. The claim's attempt number is
the fencing token: heartbeats, failures and the final record only touch the row while it is
still `running` under that attempt, so a worker whose claim was taken over (it stalled past
JOB_STALE_SECONDS) cannot record findings or queue deliveries a second time.
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
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit
from dicom_node.config import NodeConfig
from dicom_node.db.models import Finding, Job, ResultObject, Study, utcnow
from dicom_node.db.session import for_update
from dicom_node.delivery.service import create_deliveries
from dicom_node.ingest import IngestError, Ingestor
from dicom_node.reconcile import heartbeat_lost
from dicom_node.studies import source_paths
from dicom_node.uids import uid_hash

log = logging.getLogger(__name__)

Analyze = Callable[[list[Path], Path], dict[str, Any]]
MAX_JOB_ATTEMPTS = 3
HEARTBEAT_SECONDS = 30.0
#: what run_job returns when another worker holds a live claim on the job
RUNNING_ELSEWHERE = "running-elsewhere"
#: what run_job returns when its own claim was taken over before it could record the outcome
TAKEN_OVER = "taken-over"


class JobRetry(RuntimeError):
    """The job failed but has attempts left; the queue should deliver it again."""


def _owned(job_id: int, attempt: int) -> Any:
    """The claim `attempt` still holds the job: nobody re-queued or re-claimed it since."""
    return and_(Job.id == job_id, Job.state == "running", Job.attempts == attempt)


@contextmanager
def heartbeat(sessions: sessionmaker[Session], job_id: int, attempt: int,
              interval: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Touch `heartbeat_at` while the analysis runs so the reconciler leaves the job alone.

    Only while the claim is ours: a stalled worker must not keep alive a job another worker
    has taken over."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with sessions() as session, session.begin():
                    session.execute(update(Job).where(_owned(job_id, attempt))
                                    .values(heartbeat_at=utcnow())
                                    .execution_options(synchronize_session=False))
            except Exception:  # a missed beat only matters after job_stale_seconds
                log.exception("heartbeat of job %s failed", job_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def output_dir(config: NodeConfig, study_uid: str, job_id: int, attempt: int) -> Path:
    """One folder per claim, so a stalled worker still writing cannot overwrite the files of
    the worker that took the job over."""
    digest = uid_hash(study_uid)
    return config.results_dir / digest[:2] / digest / f"job-{job_id}" / f"attempt-{attempt}"


def _claim(session: Session, config: NodeConfig, job_id: int, worker_name: str) -> bool:
    """Take the job if it is queued, or running on a worker that stopped beating; True when
    this call got it. One UPDATE, so the database decides between racing workers."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.superseded_by.is_(None),
               or_(Job.state == "queued", heartbeat_lost(config, now)))
        .values(state="running", attempts=Job.attempts + 1, started_at=now, heartbeat_at=now,
                worker=worker_name[:128])
        .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def run_job(sessions: sessionmaker[Session], config: NodeConfig, job_id: int, analyze: Analyze,
            worker_name: str = "") -> str:
    """Analyse the study of one job and record everything; returns the job's final state,
    or RUNNING_ELSEWHERE / TAKEN_OVER when another worker owns the job."""
    with sessions() as session, session.begin():
        job = session.get(Job, job_id)
        if job is None:
            raise ValueError(f"no job with id {job_id}")
        study = session.get(Study, job.study_id)
        claimed = job.superseded_by is None and job.state not in ("done", "failed") and (
            _claim(session, config, job_id, worker_name))
        session.refresh(job)  # the committed row, whoever won
        if job.superseded_by is not None:
            audit.record(session, "job.skipped", study_uid=study.study_instance_uid,
                         actor=worker_name, job_id=job.id, reason="superseded by a newer run")
            return "superseded"
        if not claimed and job.state in ("done", "failed"):
            return job.state
        if not claimed:
            beat = job.heartbeat_at.isoformat() if job.heartbeat_at else "none"
            audit.record(session, "job.skipped", study_uid=study.study_instance_uid,
                         actor=worker_name, job_id=job.id, reason=f"{job.state} on "
                         f"{job.worker or 'another worker'} with a live heartbeat ({beat})")
            return RUNNING_ELSEWHERE
        files = source_paths(session, study)
        study_uid, patient_id = study.study_instance_uid, study.patient_id
        attempts = job.attempts
        out = output_dir(config, study_uid, job.id, attempts)
        job.output_dir = str(out)
        audit.record(session, "job.started", study_uid=study_uid, patient_id=patient_id,
                     actor=worker_name, job_id=job.id, attempt=attempts, instances=len(files))
    try:
        with heartbeat(sessions, job_id, attempts):
            document = analyze(files, out)
    except Exception as exc:
        final = attempts >= MAX_JOB_ATTEMPTS
        with sessions() as session, session.begin():
            job = _owned_job(session, job_id, attempts, lock=True)
            if job is None:
                return _taken_over(sessions, job_id, attempts, worker_name,
                                   f"analysis failed ({type(exc).__name__}: {exc})")
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
    return _record(sessions, config, job_id, attempts, document, out, worker_name)


def _owned_job(session: Session, job_id: int, attempt: int, lock: bool) -> Job | None:
    """The job row if claim `attempt` still owns it, else None; with `lock`, the row stays
    locked until commit so no re-queue or re-claim can slip in before the outcome is written."""
    stmt = select(Job).where(_owned(job_id, attempt)).execution_options(populate_existing=True)
    return session.scalar(for_update(session, stmt) if lock else stmt)


def _taken_over(sessions: sessionmaker[Session], job_id: int, attempt: int, worker_name: str,
                what: str) -> str:
    """Drop this claim's outcome: the row belongs to a later claim or a re-queue now."""
    with sessions() as session, session.begin():
        job = session.get(Job, job_id)
        study = session.get(Study, job.study_id)
        reason = (f"{what}, but attempt {attempt} no longer owns the job (now {job.state}, "
                  f"attempt {job.attempts} on {job.worker or 'no worker'}); outcome discarded")
        audit.record(session, "job.skipped", study_uid=study.study_instance_uid,
                     actor=worker_name, job_id=job_id, attempt=attempt, reason=reason)
    log.warning("job %s: %s", job_id, reason)
    return TAKEN_OVER


def _record(sessions: sessionmaker[Session], config: NodeConfig, job_id: int, attempt: int,
            document: dict[str, Any], out: Path, worker_name: str) -> str:
    with sessions() as session:
        owned = _owned_job(session, job_id, attempt, lock=False) is not None
    if not owned:  # checked before indexing result objects into the study
        return _taken_over(sessions, job_id, attempt, worker_name, "analysis finished")
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
        # checked again under the row lock: the early check above leaves a window
        job = _owned_job(session, job_id, attempt, lock=True)
        if job is None:
            return _taken_over(sessions, job_id, attempt, worker_name, "results indexed")
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
                                     path=str(path), sha256=file_sha256(path)))
        superseded = job.superseded_by is not None
        if study.state == "queued" and not superseded:
            study.state = "processed"
        for f in document.get("findings") or []:
            review = f.get("review") or {}
            if not review.get("required"):
                continue
            # one row per flagged finding: an admin can see every disagreement and
            # withdrawn output without opening the result objects
            second = f.get("second_opinion") or {}
            audit.record(session, "finding.review_required", study_uid=study.study_instance_uid,
                         patient_id=study.patient_id, actor=worker_name, job_id=job_id,
                         level=f["level"], condition=f["condition"], side=f.get("side"),
                         grade=f.get("grade"), grader=f.get("grader"),
                         reasons=review.get("reasons"), disagreement=f.get("disagreement"),
                         second_opinion={k: second.get(k) for k in (
                             "grader", "grade", "withdrawn")} if second else None)
        audit.record(session, "job.finished", study_uid=study.study_instance_uid,
                     patient_id=study.patient_id, actor=worker_name, job_id=job_id,
                     status=job.result_status, reason=job.reason, findings=len(
                         document.get("findings") or []), objects=sorted(outputs),
                     timings_s=job.stage_timings, superseded=superseded,
                     review_required=document.get("review_required", 0),
                     ood=document.get("ood"))
        if not superseded and job.result_status != "rejected" and dicom_meta:
            create_deliveries(session, config, job, study)
    return "done"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
