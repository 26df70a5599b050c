"""/ui/studies/{uid}: one study's key image and every finding, to confirm or correct.

A review is a new row (reviews are append-only) plus an audit event, in one transaction.
Delivered objects are never changed: "send corrected report" records a ReportVersion and
queues the corrected-report task through the outbox in the same transaction; a worker
builds the new SR version (Predecessor Documents Sequence -> the SR it supersedes) and
delivers it like any result.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node import audit, outbox
from dicom_node.db.models import Delivery, Job, ReportVersion, ResultObject, Review, Study
from dicom_node.db.session import transaction
from dicom_node.http.ui.common import (
    Console,
    client_ip,
    form_checked,
    link,
    render,
    user,
    viewed,
)
from dicom_node.review_data import (
    analysis_job,
    finding_rows,
    iso,
    latest_reviews,
    load_findings,
    study_status,
)
from dicom_node.tasks import CORRECTED_REPORT

MAX_COMMENT = 2000


def _study(session: Session, uid: str) -> Study:
    study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
    if study is None:
        raise HTTPException(404, f"no study {uid}")
    return study


def _analysed(session: Session, study: Study) -> tuple[Job, dict]:
    job = analysis_job(session, study)
    document = load_findings(session, job)
    if job is None or document is None:
        raise HTTPException(409, "this study has no finished analysis to review yet")
    return job, document


def current_sr(session: Session, job: Job) -> str | None:
    """SOP Instance UID of the newest SR of an analysis: its latest built corrected version,
    else the SR the analysis delivered."""
    built = session.scalar(select(ReportVersion.sop_instance_uid).where(
        ReportVersion.analysis_job_id == job.id, ReportVersion.state == "built")
        .order_by(ReportVersion.id.desc()))
    return built or session.scalar(select(ResultObject.sop_instance_uid).where(
        ResultObject.job_id == job.id, ResultObject.kind == "sr"))


def router(console: Console) -> APIRouter:
    api = APIRouter()

    @api.get("/ui/studies/{uid}", response_class=HTMLResponse)
    def study_page(request: Request, uid: str) -> HTMLResponse:
        who = user(console, request)
        with console.sessions() as session:
            study = _study(session, uid)
            job = analysis_job(session, study)
            document = load_findings(session, job)
            deliveries = list(session.scalars(select(Delivery).where(
                Delivery.job_id == job.id))) if job else []
            rows = finding_rows(session, job, document) if job and document else []
            versions = list(session.scalars(select(ReportVersion).where(
                ReportVersion.study_instance_uid == uid).order_by(ReportVersion.id)))
            has_overlay = job is not None and session.scalar(select(ResultObject.id).where(
                ResultObject.job_id == job.id, ResultObject.kind == "overlay")) is not None
            status = study_status(study, job, deliveries)
            patient_id = study.patient_id
            info = {"uid": uid, "patient_id": patient_id, "accession": study.accession_number,
                    "ae": study.calling_ae, "received": iso(study.first_received_at),
                    "status": status, "job_id": job.id if job else None,
                    "result_status": document.get("status") if document else None,
                    "notice": document.get("notice") if document else None,
                    "sr": current_sr(session, job) if job else None}
        viewed(console, request, who, "ui.study_viewed", study_uid=uid, patient_id=patient_id,
               findings=len(rows))
        corrections = sum(1 for r in rows if r.review and r.review.verdict == "correct")
        return render(console, request, "review.html", who, study=info, rows=rows,
                      versions=versions, has_overlay=has_overlay, corrections=corrections,
                      viewer_url=link(console, request,
                                      f"/viewer/viewer?StudyInstanceUIDs={quote(uid)}"),
                      iso=iso)

    @api.get("/ui/studies/{uid}/overlay.png")
    def overlay(request: Request, uid: str) -> Response:
        """The PNG the worker drew over the key slice (segmentation, levels, measurements)."""
        who = user(console, request)
        with console.sessions() as session:
            study = _study(session, uid)
            job = analysis_job(session, study)
            path = job and session.scalar(select(ResultObject.path).where(
                ResultObject.job_id == job.id, ResultObject.kind == "overlay"))
            patient_id = study.patient_id
        if not path or not Path(path).is_file():
            raise HTTPException(404, "no key image for this study")
        viewed(console, request, who, "ui.image_viewed", study_uid=uid, patient_id=patient_id)
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})

    @api.post("/ui/studies/{uid}/reviews")
    async def post_review(request: Request, uid: str) -> Response:
        who = user(console, request)
        form = await form_checked(request, who)
        key, verdict = form.get("finding_key", ""), form.get("verdict", "")
        value = form.get("value") or None
        comment = (form.get("comment") or "").strip()[:MAX_COMMENT] or None
        with transaction(console.sessions) as session:
            study = _study(session, uid)
            job, document = _analysed(session, study)
            row = next((r for r in finding_rows(session, job, document) if r.key == key), None)
            if row is None:
                raise HTTPException(400, f"study has no finding {key!r}")
            if verdict not in ("confirm", "correct"):
                raise HTTPException(400, "verdict must be confirm or correct")
            if verdict == "confirm":
                if row.node_value is None:
                    raise HTTPException(400, "an Undetermined finding cannot be confirmed: "
                                             "correct it with a grade")
                value = None
            elif value not in row.choices:
                raise HTTPException(400, f"corrected value must be one of {row.choices}")
            elif value == row.node_value:
                raise HTTPException(400, "the correction equals the node's value: confirm it")
            review = Review(study_instance_uid=uid, job_id=job.id, finding_key=key,
                            kind=row.kind, model_version=row.model_version,
                            node_value=row.node_value, verdict=verdict, corrected_value=value,
                            comment=comment, reviewer=who.name)
            session.add(review)
            session.flush()
            audit.record(session, "review.recorded", actor=who.name, ip=client_ip(request),
                         study_uid=uid, patient_id=study.patient_id, review_id=review.id,
                         job_id=job.id, finding=key, verdict=verdict, node_value=row.node_value,
                         corrected_value=value, model_version=row.model_version,
                         comment=comment)
        return RedirectResponse(link(console, request, f"/ui/studies/{quote(uid)}#{key}"),
                                status_code=303)

    @api.post("/ui/studies/{uid}/corrected-report")
    async def post_corrected_report(request: Request, uid: str) -> Response:
        who = user(console, request)
        await form_checked(request, who)
        with transaction(console.sessions) as session:
            study = _study(session, uid)
            job, _document = _analysed(session, study)
            _require_corrections(session, job)
            version = ReportVersion(study_instance_uid=uid, analysis_job_id=job.id,
                                    supersedes_sop_instance_uid=current_sr(session, job),
                                    state="queued", requested_by=who.name)
            session.add(version)
            session.flush()
            # the task is published only after this transaction commits (outbox relay)
            outbox.enqueue(session, CORRECTED_REPORT, report_version_id=version.id)
            audit.record(session, "report.correction_requested", actor=who.name,
                         ip=client_ip(request), study_uid=uid, patient_id=study.patient_id,
                         job_id=job.id, report_version_id=version.id,
                         supersedes=version.supersedes_sop_instance_uid)
        return RedirectResponse(link(console, request, f"/ui/studies/{quote(uid)}#versions"),
                                status_code=303)

    return api


def _require_corrections(session: Session, job: Job) -> None:
    latest = latest_reviews(session, [job.id])
    if not any(r.verdict == "correct" for r in latest.values()):
        raise HTTPException(400, "no finding of this study is corrected: nothing to send")

