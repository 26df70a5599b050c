"""FastAPI application: STOW-RS in, QIDO/WADO-RS out, admin API, /metrics, /healthz.

Every DICOMweb and admin route needs the bearer API_TOKEN (patient data); with no token
configured they all answer 503 rather than open up. /healthz and /metrics carry no patient
data and stay open for probes and Prometheus.
"""

from __future__ import annotations

import hmac
import logging
import re
from datetime import datetime
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit
from dicom_node.config import NodeConfig
from dicom_node.db.models import Delivery, Job, Study
from dicom_node.db.session import transaction
from dicom_node.http import dicomweb, multipart, qido
from dicom_node.http.auth import COOKIE, Requester, principal
from dicom_node.http.metrics import registry_for
from dicom_node.http.ui import console_router
from dicom_node.http.viewer import viewer_router
from dicom_node.ingest import IngestError, Ingestor

log = logging.getLogger(__name__)
DICOM_JSON = "application/dicom+json"


def create_app(config: NodeConfig, sessions: sessionmaker[Session],
               ingestor: Ingestor | None = None) -> FastAPI:
    app = FastAPI(title="lumbar-node", docs_url=None, redoc_url=None)
    ingestor = ingestor or Ingestor(config, sessions)
    registry = registry_for(sessions)
    origins = [o.strip() for o in config.cors_origins.split(",") if o.strip()]
    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Accept"])

    def authorised(request: Request) -> str:
        # a console session (cookie) may read, so a viewer on this origin works after
        # sign-in; writing (STOW-RS, admin POSTs) stays bearer-only
        if request.method in ("GET", "HEAD") and COOKIE in request.cookies:
            user = principal(sessions, request)
            if user is not None:
                return Requester(_ip(request), user.name)
        if not config.api_token:
            raise HTTPException(503, "API_TOKEN is not configured: authenticated routes are off")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), config.api_token):
            with transaction(sessions) as session:
                audit.record(session, "http.unauthorised", actor="http", ip=_ip(request),
                             path=request.url.path)
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        return _ip(request)

    def base_url(request: Request) -> str:
        try:
            return public_root(config, request) + "/dicomweb"
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # report, do not crash the probe
            return JSONResponse({"status": "error", "database": str(exc)[:200]}, 503)
        return JSONResponse({"status": "ok", "ae_title": config.ae_title})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # --- STOW-RS ---------------------------------------------------------------------------
    @app.post("/dicomweb/studies")
    @app.post("/dicomweb/studies/{study_uid}")
    async def stow(request: Request, study_uid: str | None = None,
                   ip: str = Depends(authorised)) -> JSONResponse:
        try:
            boundary = multipart.boundary_of(request.headers.get("content-type", ""))
            body = await request.body()
            parts = multipart.split_parts(body, boundary)
        except ValueError as exc:
            raise HTTPException(415 if "multipart" in str(exc) else 400, str(exc)) from None
        stored, failed = [], []
        for headers, payload in parts:
            ctype = headers.get("content-type", "application/dicom").split(";")[0].strip()
            if ctype != "application/dicom":
                failed.append({"reason": f"part type {ctype} not supported", "status": 0xC000})
                continue
            try:
                result = ingestor.store(payload, source="stow", ip=ip)
                if study_uid and result.study_instance_uid != study_uid:
                    failed.append({"sop": result.sop_instance_uid, "status": 0xC000,
                                   "reason": "instance belongs to another study"})
                    continue
                stored.append(result)
            except IngestError as exc:
                failed.append({"reason": exc.reason, "status": exc.status})
        doc = _stow_response(stored, failed, base_url(request))
        status = 200 if not failed else (202 if stored else 409)
        if failed and not stored and all(f["status"] == 0xA700 for f in failed):
            # out of resources (spool bound, disk floor): PS3.18 503, worth retrying later
            return JSONResponse(doc, status_code=503, media_type=DICOM_JSON,
                                headers={"Retry-After": "30"})
        return JSONResponse(doc, status_code=status, media_type=DICOM_JSON)

    # --- QIDO-RS ---------------------------------------------------------------------------
    def _qido(request: Request, level: str, ip: str, study_uid: str | None = None,
              series_uid: str | None = None) -> JSONResponse:
        """Every parameter is applied or refused with 400 (see docs/conformance.md)."""
        base = base_url(request)
        try:
            query = qido.parse(request.query_params.multi_items(), level)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        with sessions() as session:
            study = _study(session, study_uid) if study_uid else None
            try:
                if level == "study":
                    page = dicomweb.search_studies(session, query, base)
                elif level == "series":
                    page = dicomweb.search_series(session, query, base, study)
                else:
                    page = dicomweb.search_instances(session, query, base, study, series_uid)
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
        event = {"study": "qido.studies", "series": "qido.series"}.get(level, "qido.instances")
        _audit_read(sessions, ip, event, study_uid, count=len(page.items),
                    keys=sorted(k.attr.keyword for k in query.keys if k.test is not None))
        response = JSONResponse(page.items, media_type=DICOM_JSON)
        more = (qido.MORE_WARNING,) if page.more and query.server_limited else ()
        for warning in query.warnings + more:
            response.headers.append("Warning", f'299 {base}: "{warning}"')
        return response

    @app.get("/dicomweb/studies")
    def qido_studies(request: Request, ip: str = Depends(authorised)) -> JSONResponse:
        return _qido(request, "study", ip)

    @app.get("/dicomweb/series")
    def qido_all_series(request: Request, ip: str = Depends(authorised)) -> JSONResponse:
        return _qido(request, "series", ip)

    @app.get("/dicomweb/instances")
    def qido_all_instances(request: Request, ip: str = Depends(authorised)) -> JSONResponse:
        return _qido(request, "instance", ip)

    def _study(session: Session, study_uid: str) -> Study:
        try:
            study = dicomweb.study_or_404(session, study_uid)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if study is None:
            raise HTTPException(404, f"no study {study_uid}")
        return study

    @app.get("/dicomweb/studies/{study_uid}/series")
    def qido_series(request: Request, study_uid: str,
                    ip: str = Depends(authorised)) -> JSONResponse:
        return _qido(request, "series", ip, study_uid)

    @app.get("/dicomweb/studies/{study_uid}/instances")
    def qido_study_instances(request: Request, study_uid: str,
                             ip: str = Depends(authorised)) -> JSONResponse:
        return _qido(request, "instance", ip, study_uid)

    @app.get("/dicomweb/studies/{study_uid}/series/{series_uid}/instances")
    def qido_instances(request: Request, study_uid: str, series_uid: str,
                       ip: str = Depends(authorised)) -> JSONResponse:
        return _qido(request, "instance", ip, study_uid, series_uid)

    # --- WADO-RS ---------------------------------------------------------------------------
    def _rows(study_uid: str, series_uid: str | None, sop_uid: str | None) -> list[Any]:
        with sessions() as session:
            try:
                rows = dicomweb.instances(session, _study(session, study_uid), series_uid,
                                          sop_uid)
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
        if not rows:
            raise HTTPException(404, "no matching instances")
        return rows

    @app.get("/dicomweb/studies/{study_uid}")
    @app.get("/dicomweb/studies/{study_uid}/series/{series_uid}")
    @app.get("/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}")
    def wado(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None,
             ip: str = Depends(authorised)) -> Response:
        rows = _rows(study_uid, series_uid, sop_uid)
        body, ctype = multipart.build(dicomweb.read_bytes(rows), "application/dicom")
        _audit_read(sessions, ip, "wado.retrieve", study_uid, instances=len(rows))
        return Response(body, media_type=ctype)

    @app.get("/dicomweb/studies/{study_uid}/metadata")
    @app.get("/dicomweb/studies/{study_uid}/series/{series_uid}/metadata")
    @app.get("/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata")
    def wado_metadata(request: Request, study_uid: str, series_uid: str | None = None,
                      sop_uid: str | None = None, ip: str = Depends(authorised)) -> JSONResponse:
        rows = _rows(study_uid, series_uid, sop_uid)
        _audit_read(sessions, ip, "wado.metadata", study_uid, instances=len(rows))
        return JSONResponse(dicomweb.metadata(rows, base_url(request)), media_type=DICOM_JSON)

    @app.get("/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/"
             "{frame_list}")
    def wado_frames(study_uid: str, series_uid: str, sop_uid: str, frame_list: str,
                    ip: str = Depends(authorised)) -> Response:
        rows = _rows(study_uid, series_uid, sop_uid)
        try:
            numbers = [int(n) for n in frame_list.split(",")]
            payloads, media = dicomweb.frames(rows[0], numbers)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        body, ctype = multipart.build(payloads, media)
        _audit_read(sessions, ip, "wado.frames", study_uid, frames=len(numbers))
        return Response(body, media_type=ctype)

    # --- admin -----------------------------------------------------------------------------
    @app.get("/admin/audit")
    def admin_audit(
        ip: str = Depends(authorised), study: str | None = None,
        patient_id: str | None = None, ae_title: str | None = None,
        event_type: str | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: int = Query(1000, ge=1, le=100000),
        format: str = Query("json", pattern="^(json|csv)$"),
    ) -> Response:
        with transaction(sessions) as session:
            rows = audit.as_dicts(audit.query(
                session, study_uid=study, patient_id=patient_id, ae_title=ae_title,
                event_type=event_type, since=since, until=until, limit=limit))
            audit.record(session, "audit.queried", actor="admin-api", ip=ip,
                         study_uid=study, filters={k: v for k, v in {
                             "study": study, "patient_id": patient_id, "ae_title": ae_title,
                             "event_type": event_type, "since": str(since or ""),
                             "until": str(until or "")}.items() if v}, rows=len(rows))
        if format == "csv":
            return PlainTextResponse(audit.to_csv(rows), media_type="text/csv")
        return JSONResponse(rows)

    @app.get("/admin/deliveries")
    def admin_deliveries(ip: str = Depends(authorised), status: str | None = None
                         ) -> JSONResponse:
        with transaction(sessions) as session:
            stmt = select(Delivery, Job, Study).join(Job, Job.id == Delivery.job_id).join(
                Study, Study.id == Job.study_id).order_by(Delivery.id.desc()).limit(1000)
            if status:
                stmt = stmt.where(Delivery.status == status)
            rows = [{"id": d.id, "study_instance_uid": s.study_instance_uid,
                     "destination": d.destination, "status": d.status, "attempts": d.attempts,
                     "last_error": d.last_error, "next_attempt_at": _iso(d.next_attempt_at),
                     "dead_lettered_at": _iso(d.dead_lettered_at)}
                    for d, _j, s in session.execute(stmt)]
            audit.record(session, "deliveries.queried", actor="admin-api", ip=ip,
                         status=status, rows=len(rows))
        return JSONResponse(rows)

    @app.post("/admin/studies/{study_uid}/resend")
    def admin_resend(study_uid: str, ip: str = Depends(authorised)) -> JSONResponse:
        from dicom_node.delivery.service import resend_study

        try:
            ids = resend_study(sessions, config, study_uid, actor=f"admin-api@{ip}")
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from None
        return JSONResponse({"deliveries": ids})

    app.include_router(console_router(config, sessions))
    app.include_router(viewer_router(config))
    return app


def public_root(config: NodeConfig, request: Request) -> str:
    """The node's root URL for links in answers (RetrieveURL, BulkDataURI).

    PUBLIC_BASE_URL when configured. Otherwise the Host the client used, with the scheme
    the node itself serves (uvicorn rewrites the request scheme from X-Forwarded-Proto sent
    from loopback, so the request's own scheme cannot be relied on); X-Forwarded-Proto,
    -Host and -Prefix only with TRUST_FORWARDED_HEADERS, and a malformed one is refused
    rather than put into a link a viewer will follow with its token."""
    if config.public_base_url:
        return config.public_base_url.rstrip("/")
    scheme = "https" if config.tls_cert else "http"
    host = request.headers.get("host") or request.url.netloc
    prefix = ""
    if config.trust_forwarded_headers:
        scheme = _forwarded(request, "proto", _PROTO) or scheme
        host = _forwarded(request, "host", _HOST) or host
        prefix = (_forwarded(request, "prefix", _PREFIX) or "").rstrip("/")
    if not _HOST.fullmatch(host):
        raise ValueError(f"invalid Host header {host[:80]!r}")
    return f"{scheme.lower()}://{host}{prefix}"


_PROTO = re.compile(r"https?", re.IGNORECASE)
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
_PREFIX = re.compile(r"(/[A-Za-z0-9._~%\-]+)*/?")


def _forwarded(request: Request, name: str, pattern: re.Pattern[str]) -> str | None:
    """The first (client-most) value of X-Forwarded-<name>, checked against `pattern`."""
    raw = request.headers.get(f"x-forwarded-{name}")
    if raw is None:
        return None
    value = raw.split(",")[0].strip()
    if not pattern.fullmatch(value):
        raise ValueError(f"invalid X-Forwarded-{name.capitalize()} header {value[:80]!r}")
    return value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _audit_read(sessions: sessionmaker[Session], ip: str, event_type: str,
                study_uid: str | None, **detail: Any) -> None:
    with transaction(sessions) as session:
        audit.record(session, event_type, actor=getattr(ip, "user", None) or "dicomweb",
                     ip=ip, study_uid=study_uid, **detail)


def _stow_response(stored: list[Any], failed: list[dict], base: str) -> dict:
    doc: dict[str, Any] = {}
    if stored:
        doc["00081199"] = {"vr": "SQ", "Value": [{
            "00081155": {"vr": "UI", "Value": [s.sop_instance_uid]},
            "00081190": {"vr": "UR", "Value": [
                f"{base}/studies/{s.study_instance_uid}"]},
        } for s in stored]}
    if failed:
        doc["00081198"] = {"vr": "SQ", "Value": [{
            "00081197": {"vr": "US", "Value": [f["status"] & 0xFFFF]},
        } for f in failed]}
        log.warning("STOW-RS refused %d part(s): %s", len(failed),
                    "; ".join(f["reason"] for f in failed)[:500])
    return doc
