"""/ui/login and /ui/logout.

The sign-in form has no session yet, so its CSRF token is a double-submit cookie
(`lumbar_login_csrf`, SameSite=Strict) that the POSTed field must repeat. Its path is the
sign-in page's as the browser sees it (under the node's public prefix, see
common.base_path), or the browser would not send it back.

`next` is a path on the node (`/ui/studies/...`, no public prefix): the prefix is added
when redirecting there.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from dicom_node.db.session import transaction
from dicom_node.http import auth
from dicom_node.http.ui.common import Console, client_ip, form_checked, link, render, user


def _safe_next(target: str | None) -> str:
    """Only a path on this node: never an open redirect to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target


def router(console: Console) -> APIRouter:
    api = APIRouter()
    config = console.config

    def login_page(request: Request, error: str | None = None, status: int = 200,
                   next_url: str = "/ui/") -> Response:
        token = secrets.token_urlsafe(24)
        response = render(console, request, "login.html", None, status_code=status,
                          error=error, csrf_token=token, next_url=_safe_next(next_url))
        response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                            path=link(console, request, "/ui/login"),
                            secure=auth.secure_cookies(config), max_age=3600)
        return response

    @api.get("/ui/login")
    def get_login(request: Request, next: str = "/ui/") -> Response:
        return login_page(request, next_url=next)

    @api.post("/ui/login")
    async def post_login(request: Request) -> Response:
        form = await request.form()
        if not auth.csrf_ok(request.cookies.get(auth.LOGIN_CSRF_COOKIE),
                            str(form.get("csrf_token") or "")):
            raise HTTPException(403, "missing or wrong CSRF token: reload the sign-in page")
        name = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        next_url = _safe_next(str(form.get("next") or "/ui/"))
        ip = client_ip(request)

        def attempt() -> tuple[str | None, auth.LoginRefused | None]:
            with transaction(console.sessions) as session:
                try:
                    found = auth.authenticate(session, config, name, password, ip)
                    return auth.open_session(session, config, found, ip), None
                except auth.LoginRefused as exc:  # caught inside: count and audit commit
                    return None, exc

        # argon2 takes tens of milliseconds of CPU: off the event loop
        token, refused = await run_in_threadpool(attempt)
        if refused is not None or token is None:
            refused = refused or auth.LoginRefused("sign-in failed")
            return login_page(request, str(refused), 429 if refused.locked else 401, next_url)
        response = RedirectResponse(link(console, request, next_url), status_code=303)
        auth.set_session_cookie(response, config, token)
        response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path=link(console, request, "/ui/login"))
        return response

    @api.post("/ui/logout")
    async def post_logout(request: Request) -> Response:
        who = user(console, request)
        await form_checked(request, who)
        with transaction(console.sessions) as session:
            auth.close_session(session, request.cookies.get(auth.COOKIE, ""), client_ip(request))
        response = RedirectResponse(link(console, request, "/ui/login"), status_code=303)
        auth.clear_session_cookie(response, config)
        return response

    return api

