"""When a study is complete enough to analyse, and closing it.

A study closes as soon as the series the pipeline needs (sagittal T2 or STIR, sagittal T1,
axial T2, by the same rules the pipeline uses) have arrived and nothing has come for
SETTLE_SECONDS; otherwise it closes with what it has once it has been quiet for
STUDY_TIMEOUT_SECONDS. Due studies come from one query over timestamps, so a restart loses
no timers. Closing writes the job row and its outbox row in one transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit, outbox
from dicom_node.config import NodeConfig
from dicom_node.db.models import Instance, Job, Series, Study, utcnow
from dicom_node.db.session import for_update
from dicom_node.tasks import PROCESS_STUDY
from lumbar_common.series_selection import read_headers, select_study

log = logging.getLogger(__name__)


def aware(dt: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored is UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Decision:
    action: str  # "close" | "ignore" | "wait"
    reason: str
    roles: dict[str, str]


def source_paths(session: Session, study: Study) -> list[Path]:
    rows = session.scalars(
        select(Instance.path).join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == study.id, Series.is_result.is_(False),
               Instance.source != "result")
        .order_by(Instance.id))
    return [Path(p) for p in rows]


def evaluate(session: Session, study: Study, config: NodeConfig, now: datetime) -> Decision:
    modalities = set(filter(None, (study.modalities or "").split("\\")))
    if "MR" not in modalities:
        reason = f"not an MR study (modalities: {', '.join(sorted(modalities)) or 'none'})"
        return Decision("ignore" if config.ignore_non_lumbar else "close", reason, {})
    headers, _warnings = read_headers(source_paths(session, study))
    selection = select_study(headers)
    roles = dict(selection.chosen)
    if not selection.is_lumbar:
        reason = selection.rejected_reason or "not a lumbar spine study"
        return Decision("ignore" if config.ignore_non_lumbar else "close", reason, roles)
    if selection.complete:
        return Decision("close", "complete: " + ", ".join(sorted(roles)), roles)
    quiet = (now - aware(study.last_received_at)).total_seconds()
    if quiet >= config.study_timeout_seconds:
        missing = [r for r in ("sag_t2|sag_stir", "sag_t1", "ax_t2")
                   if not any(part in roles for part in r.split("|"))]
        return Decision("close", f"timeout after {quiet:.0f} s quiet; missing {', '.join(missing)}",
                        roles)
    return Decision("wait", "waiting for " + (selection.rejected_reason or "more series"), roles)


def close_study(session: Session, study: Study, reason: str, roles: dict[str, str],
                now: datetime) -> Job:
    """New job + outbox row; earlier jobs of the study are superseded by it."""
    job = Job(study_id=study.id, state="queued", instance_count=study.instance_count,
              created_at=now)
    session.add(job)
    session.flush()
    earlier = session.scalars(select(Job).where(Job.study_id == study.id, Job.id != job.id,
                                                Job.superseded_by.is_(None)))
    for old in earlier:
        old.superseded_by = job.id
        audit.record(session, "job.superseded", study_uid=study.study_instance_uid,
                     patient_id=study.patient_id, actor="scheduler", job_id=old.id,
                     superseded_by=job.id)
    outbox.enqueue(session, PROCESS_STUDY, job_id=job.id)
    study.state, study.reason, study.closed_at, study.checked_at = "queued", reason, now, now
    audit.record(session, "study.closed", study_uid=study.study_instance_uid,
                 patient_id=study.patient_id, actor="scheduler", job_id=job.id, reason=reason,
                 instances=study.instance_count, roles=roles)
    log.info("study closed (%s), job %s queued", reason, job.id)
    return job


def close_due_studies(sessions: sessionmaker[Session], config: NodeConfig,
                      now: datetime | None = None) -> list[tuple[str, str]]:
    """One pass over studies that have been quiet long enough; returns (uid, action) pairs."""
    now = now or utcnow()
    settle_cut = now - timedelta(seconds=config.settle_seconds)
    timeout_cut = now - timedelta(seconds=config.study_timeout_seconds)
    done: list[tuple[str, str]] = []
    with sessions() as session, session.begin():
        stmt = select(Study).where(
            Study.state == "receiving",
            Study.last_received_at <= settle_cut,
            or_(Study.checked_at.is_(None), Study.checked_at < Study.last_received_at,
                Study.last_received_at <= timeout_cut),
        ).order_by(Study.last_received_at).limit(50)
        for study in session.scalars(for_update(session, stmt, skip_locked=True)):
            decision = evaluate(session, study, config, now)
            if decision.action == "close":
                close_study(session, study, decision.reason, decision.roles, now)
            elif decision.action == "ignore":
                study.state, study.reason, study.checked_at = "ignored", decision.reason, now
                audit.record(session, "study.ignored", study_uid=study.study_instance_uid,
                             patient_id=study.patient_id, actor="scheduler",
                             reason=decision.reason)
                log.info("study ignored: %s", decision.reason)
            else:
                study.checked_at = now
            done.append((study.study_instance_uid, decision.action))
    return done
