"""Agreement of radiologists with the node: /ui/agreement for people, /admin/agreement as
JSON for programs (bearer API_TOKEN or a console session, like the other admin GETs).

Per model version and finding: observed agreement, Cohen's kappa and the confusion matrix
(rows: the node's value, columns: the radiologist's), from the latest review of each
finding (see dicom_node.feedback).
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from dicom_node import audit, feedback
from dicom_node.db.session import transaction
from dicom_node.http.auth import principal
from dicom_node.http.ui.common import Console, client_ip, render, user


def router(console: Console) -> APIRouter:
    api = APIRouter()
    config = console.config

    def report() -> dict:
        with console.sessions() as session:
            data = feedback.agreement_report(feedback.all_reviews(session))
        data["floor"] = config.agreement_floor
        data["min_reviews"] = config.agreement_min_reviews
        data["warnings"] = feedback.low_agreement(data, config.agreement_floor,
                                                  config.agreement_min_reviews)
        return data

    @api.get("/ui/agreement", response_class=HTMLResponse)
    def agreement_page(request: Request) -> HTMLResponse:
        who = user(console, request)
        return render(console, request, "agreement.html", who, report=report())

    @api.get("/admin/agreement")
    def agreement_json(request: Request) -> JSONResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        bearer = bool(config.api_token) and scheme.lower() == "bearer" and (
            hmac.compare_digest(token.strip(), config.api_token))
        who = None if bearer else principal(console.sessions, request)
        if not bearer and who is None:
            with transaction(console.sessions) as session:
                audit.record(session, "http.unauthorised", actor="http",
                             ip=client_ip(request), path=request.url.path)
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        data = report()
        with transaction(console.sessions) as session:
            audit.record(session, "agreement.queried", actor=who.name if who else "admin-api",
                         ip=client_ip(request), reviews=data["reviews"])
        return JSONResponse(data)

    return api
