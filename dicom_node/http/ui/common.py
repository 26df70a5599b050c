"""What every console page shares: the template environment, who is signed in, role and
CSRF checks, and the audit record of each view.

Pages are rendered on the server from Jinja2 templates shipped in the package (no frontend
build): the console must run from the node image as it is, offline.

Every link, form action and redirect is built on the path of the node's public root
(PUBLIC_BASE_URL, see `dicom_node.http.app.public_root`): behind a proxy that serves the node
under `https://host/lumbar/`, a bare `/ui/...` would leave the node's prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit
from dicom_node.config import NodeConfig
from dicom_node.db.session import transaction
from dicom_node.http.auth import Principal, csrf_ok, principal

TEMPLATES = Environment(loader=PackageLoader("dicom_node.http.ui", "templates"),
                        autoescape=select_autoescape(["html"]), trim_blocks=True,
                        lstrip_blocks=True)


@dataclass(frozen=True)
class Console:
    """Configuration and database of the node, handed to every console router."""

    config: NodeConfig
    sessions: sessionmaker[Session]


def base_path(config: NodeConfig, request: Request) -> str:
    """The path the node is served under as browsers see it (`/lumbar`, or `` at the root):
    PUBLIC_BASE_URL's path, or a trusted X-Forwarded-Prefix; a malformed one is a 400."""
    from dicom_node.http.app import public_root  # app includes the console's routers

    try:
        return urlsplit(public_root(config, request)).path.rstrip("/")
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def link(console: Console, request: Request, path: str) -> str:
    """`path` on this node (`/ui/...`) as a browser must ask for it."""
    return base_path(console.config, request) + path


def form_time(text: str | None, expected: str = "an ISO time") -> datetime | None:
    """A filter field's time: empty means no filter; anything that is not ISO 8601 is a 400
    that says what was expected, never a silently ignored filter."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"not {expected}: {text!r}") from None


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def user(console: Console, request: Request) -> Principal:
    """The signed-in user, or a redirect to /ui/login that comes back here afterwards."""
    found = principal(console.sessions, request)
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        # an HTTPException carrying a redirect: routers cannot add app exception handlers
        raise HTTPException(303, "sign in first", headers={
            "Location": link(console, request, f"/ui/login?next={quote(target, safe='')}")})
    return found


def admin(console: Console, request: Request) -> Principal:
    """The signed-in user if an admin; 403 (audited) for anyone else."""
    who = user(console, request)
    if not who.is_admin:
        with transaction(console.sessions) as session:
            audit.record(session, "ui.forbidden", actor=who.name, ip=client_ip(request),
                         path=request.url.path, role=who.role)
        raise HTTPException(403, "this page is for admins")
    return who


async def form_checked(request: Request, who: Principal) -> dict[str, str]:
    """The POSTed form if its CSRF token is the session's; 403 otherwise."""
    form = await request.form()
    if not csrf_ok(who.csrf_token, str(form.get("csrf_token") or "")):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return {k: str(v) for k, v in form.items()}


def viewed(console: Console, request: Request, who: Principal, event_type: str,
           study_uid: str | None = None, patient_id: str | None = None,
           **detail: Any) -> None:
    """One audit row per view of patient data, under the person who looked."""
    with transaction(console.sessions) as session:
        audit.record(session, event_type, actor=who.name, ip=client_ip(request),
                     study_uid=study_uid, patient_id=patient_id, **detail)


def render(console: Console, request: Request, name: str, who: Principal | None,
           status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page; its templates prefix every node path with `root` (see base_path)."""
    html = TEMPLATES.get_template(name).render(
        user=who, path=request.url.path, quote=quote,
        root=base_path(console.config, request), **context)
    return HTMLResponse(html, status_code=status_code, headers={
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                   "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        "Referrer-Policy": "same-origin",
    })
