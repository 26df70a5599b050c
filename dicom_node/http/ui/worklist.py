"""/ui/: recent studies with their status, turnaround and the findings flagged for review;
filters by date, status and calling AE; a warning when a model version's agreement with
radiologists has fallen below AGREEMENT_FLOOR."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from dicom_node import feedback
from dicom_node.db.models import Delivery, Study
from dicom_node.http.ui.common import Console, form_time, render, user, viewed
from dicom_node.review_data import (
    STATUSES,
    analysis_job,
    flagged_summary,
    iso,
    load_findings,
    study_status,
    turnaround_s,
)

MAX_ROWS = 200


def router(console: Console) -> APIRouter:
    api = APIRouter()

    @api.get("/ui/", response_class=HTMLResponse)
    def worklist(request: Request, since: str | None = None, until: str | None = None,
                 status: str | None = Query(None), ae: str | None = None) -> HTMLResponse:
        who = user(console, request)
        if status and status not in STATUSES:
            raise HTTPException(400, f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        start, end = (form_time(t, "a date (YYYY-MM-DD)") for t in (since, until))
        rows = []
        with console.sessions() as session:
            stmt = select(Study).order_by(Study.last_received_at.desc()).limit(MAX_ROWS)
            if start:
                stmt = stmt.where(Study.first_received_at >= start)
            if end:  # a date means the whole day
                stmt = stmt.where(Study.first_received_at < end.replace(hour=23, minute=59,
                                                                       second=59))
            if ae:
                stmt = stmt.where(Study.calling_ae == ae)
            for study in session.scalars(stmt):
                job = analysis_job(session, study)
                deliveries = list(session.scalars(select(Delivery).where(
                    Delivery.job_id == job.id))) if job else []
                state = study_status(study, job, deliveries)
                if status and state != status:
                    continue
                seconds = turnaround_s(study, job, deliveries)
                rows.append({
                    "uid": study.study_instance_uid, "patient_id": study.patient_id,
                    "accession": study.accession_number, "ae": study.calling_ae,
                    "received": iso(study.first_received_at), "status": state,
                    "turnaround": f"{seconds:.0f} s" if seconds is not None else "",
                    "flagged": flagged_summary(load_findings(session, job)),
                })
            report = feedback.agreement_report(feedback.all_reviews(session))
        warnings = feedback.low_agreement(report, console.config.agreement_floor,
                                          console.config.agreement_min_reviews)
        viewed(console, request, who, "ui.worklist_viewed", rows=len(rows),
               filters={k: v for k, v in {"since": since, "until": until, "status": status,
                                          "ae": ae}.items() if v})
        return render(console, request, "worklist.html", who, rows=rows, statuses=STATUSES,
                      warnings=warnings, filters={"since": since or "", "until": until or "",
                                                  "status": status or "", "ae": ae or ""})

    return api
