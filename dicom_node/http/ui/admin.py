"""Admin pages (role admin): audit search with CSV download, deliveries with the
dead-letter queue and a resend button, queue depth and workers, the running configuration
with its secrets redacted.

Queue and worker figures come from the database (outbox, jobs) and, with a Redis broker,
from the queue lengths and one Celery `inspect` with a short timeout: the page must load
while the broker is down, and then says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy import func, select

from dicom_node import audit
from dicom_node.config import NodeConfig, redact_url
from dicom_node.db.models import Delivery, Job, OutboxMessage, Study
from dicom_node.db.session import transaction
from dicom_node.http.ui.common import (
    Console,
    admin,
    client_ip,
    form_checked,
    form_time,
    link,
    render,
)
from dicom_node.review_data import iso

INSPECT_TIMEOUT_S = 1.0
SECRET_FIELDS = ("api_token", "destination_token")
URL_FIELDS = ("database_url", "broker_url", "result_backend")


def redacted_config(config: NodeConfig) -> list[tuple[str, str]]:
    """Every setting as it runs; tokens shown only as set/unset, passwords in URLs as ***."""
    rows = []
    for f in dataclasses.fields(config):
        value: Any = getattr(config, f.name)
        if f.name in SECRET_FIELDS:
            shown = "(set, hidden)" if value else "(not set)"
        elif f.name in URL_FIELDS:
            shown = _redact_any_url(str(value)) if value else "(default)"
        elif f.name == "destinations":
            shown = ", ".join(d.label for d in value)
        elif f.name == "allowed_callers":
            shown = ", ".join(c.ae_title + (f"@{c.ip}" if c.ip else "") for c in value)
        else:
            shown = str(value if value is not None else "")
        rows.append((f.name.upper(), shown))
    return rows


def _redact_any_url(url: str) -> str:
    """`scheme://user:password@host` of any scheme (postgresql, redis) with `***@`."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return redact_url(url)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def queue_state(console: Console) -> dict[str, Any]:
    with console.sessions() as session:
        outbox = dict(session.execute(select(OutboxMessage.queue, func.count(OutboxMessage.id))
                                      .where(OutboxMessage.dispatched_at.is_(None))
                                      .group_by(OutboxMessage.queue)).all())
        jobs = dict(session.execute(select(Job.state, func.count(Job.id))
                                    .group_by(Job.state)).all())
    state: dict[str, Any] = {"outbox": outbox, "jobs": jobs, "broker": {}, "workers": {},
                             "broker_error": None}
    config = console.config
    if not config.broker.startswith("redis"):
        state["broker_error"] = f"broker {config.broker.split(':')[0]}: queue lengths are " \
                                "only read from Redis"
        return state
    try:
        import redis

        client = redis.Redis.from_url(config.broker, socket_timeout=INSPECT_TIMEOUT_S,
                                      socket_connect_timeout=INSPECT_TIMEOUT_S)
        try:
            for queue in ("gpu", "io"):
                state["broker"][queue] = client.llen(f"{config.broker_key_prefix}{queue}")
        finally:
            client.close()
        from celery import Celery

        from dicom_node.broker import celery_settings

        app = Celery("lumbar-node-console", set_as_current=False)
        settings = celery_settings(config)
        settings["result_backend"] = None
        app.conf.update(settings)
        try:
            inspect = app.control.inspect(timeout=INSPECT_TIMEOUT_S)
            active = inspect.active() or {}
            state["workers"] = {name: len(tasks) for name, tasks in active.items()}
        finally:
            app.close()
    except Exception as exc:  # the page reports the broker's trouble instead of failing
        state["broker_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return state


def router(console: Console) -> APIRouter:
    api = APIRouter()

    @api.get("/ui/admin/audit")
    def audit_page(
        request: Request, study: str | None = None, patient_id: str | None = None,
        ae_title: str | None = None, event_type: str | None = None,
        since: str | None = None, until: str | None = None,
        limit: int = Query(500, ge=1, le=100000),
        format: str = Query("html", pattern="^(html|csv)$"),
    ) -> Response:
        who = admin(console, request)
        filters = {k: v for k, v in {"study": study, "patient_id": patient_id,
                                     "ae_title": ae_title, "event_type": event_type,
                                     "since": since, "until": until}.items() if v}
        with transaction(console.sessions) as session:
            rows = audit.as_dicts(audit.query(
                session, study_uid=study or None, patient_id=patient_id or None,
                ae_title=ae_title or None, event_type=event_type or None,
                since=form_time(since), until=form_time(until), limit=limit))
            audit.record(session, "audit.queried", actor=who.name, ip=client_ip(request),
                         study_uid=study or None, filters=filters, rows=len(rows),
                         format=format)
        if format == "csv":
            return PlainTextResponse(audit.to_csv(rows), media_type="text/csv", headers={
                "Content-Disposition": 'attachment; filename="audit.csv"'})
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        return render(console, request, "admin_audit.html", who, rows=rows, filters=filters,
                      csv_url=link(console, request,
                                   f"/ui/admin/audit?format=csv&limit={limit}")
                              + (f"&{query}" if query else ""))

    @api.get("/ui/admin/deliveries", response_class=HTMLResponse)
    def deliveries_page(request: Request, status: str | None = None) -> HTMLResponse:
        who = admin(console, request)
        with transaction(console.sessions) as session:
            stmt = select(Delivery, Study).join(Job, Job.id == Delivery.job_id).join(
                Study, Study.id == Job.study_id).order_by(Delivery.id.desc()).limit(500)
            if status:
                stmt = stmt.where(Delivery.status == status)
            rows = [{"id": d.id, "study": s.study_instance_uid, "patient_id": s.patient_id,
                     "destination": d.destination, "status": d.status,
                     "attempts": d.attempts, "last_error": d.last_error,
                     "created": iso(d.created_at), "delivered": iso(d.delivered_at),
                     "dead": iso(d.dead_lettered_at)} for d, s in session.execute(stmt)]
            audit.record(session, "deliveries.queried", actor=who.name, ip=client_ip(request),
                         status=status, rows=len(rows))
        return render(console, request, "admin_deliveries.html", who, rows=rows,
                      status=status or "")

    @api.post("/ui/admin/studies/{uid}/resend")
    async def resend(request: Request, uid: str) -> Response:
        from dicom_node.delivery.service import resend_study

        who = admin(console, request)
        await form_checked(request, who)
        try:
            resend_study(console.sessions, console.config, uid, actor=who.name)
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from None
        return RedirectResponse(link(console, request, "/ui/admin/deliveries"),
                                status_code=303)

    @api.get("/ui/admin/queues", response_class=HTMLResponse)
    def queues_page(request: Request) -> HTMLResponse:
        who = admin(console, request)
        return render(console, request, "admin_queues.html", who, state=queue_state(console))

    @api.get("/ui/admin/config", response_class=HTMLResponse)
    def config_page(request: Request) -> HTMLResponse:
        who = admin(console, request)
        return render(console, request, "admin_config.html", who,
                      settings=redacted_config(console.config))

    return api
