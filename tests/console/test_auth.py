"""Sign-in, sessions, CSRF, lockout and roles over real HTTP, and the session cookie on the
DICOMweb routes: accepted for reads, never for STOW-RS."""

from __future__ import annotations

from consolekit import csrf_of, sign_in
from nodekit import write_study
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, User, UserSession
from dicom_node.http.multipart import build


def _events(node, event_type):
    with node.sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.event_type == event_type)))


def test_sign_in_sets_a_strict_http_only_session_cookie(node, browserless):
    assert browserless.get("/ui/").status_code == 303  # not signed in: off to the form
    r = sign_in(browserless, "rad")
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("lumbar_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    with node.sessions() as s:
        row = s.scalar(select(UserSession))
        token = browserless.cookies["lumbar_session"]
        assert row.token_sha256 != token and len(row.token_sha256) == 64  # stored hashed
    assert [e.actor for e in _events(node, "ui.login")] == ["rad"]


def test_secure_cookie_when_the_public_url_is_https(tmp_path, console_db):
    from consolekit import PrefixProxy, console_config
    from fastapi.testclient import TestClient

    from dicom_node.db.session import make_engine, make_sessionmaker
    from dicom_node.http.app import create_app

    config = console_config(tmp_path, database_url=console_db,
                            public_base_url="https://pacs.example.org/ai-node")
    engine = make_engine(config.db_url)
    app = PrefixProxy(create_app(config, make_sessionmaker(engine)), "/ai-node")
    with TestClient(app, base_url="https://testserver/ai-node",
                    follow_redirects=False) as client:
        r = sign_in(client, "rad")
    engine.dispose()
    assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


def test_wrong_password_is_refused_counted_and_locks(node, browserless):
    for _ in range(2):
        r = sign_in(browserless, "rad", "not-the-password")
        assert r.status_code == 401 and "wrong user name or password" in r.text
        assert "lumbar_session" not in browserless.cookies
    r = sign_in(browserless, "rad", "not-the-password")  # third failure: locked
    assert r.status_code == 429
    r = sign_in(browserless, "rad")  # even the right password, while locked
    assert r.status_code == 429 and "lumbar_session" not in browserless.cookies
    assert sign_in(browserless, "nobody", "x" * 12).status_code == 401
    with node.sessions() as s:
        assert s.scalar(select(User).where(User.name == "rad")).locked_until is not None
    reasons = [e.detail["reason"] for e in _events(node, "ui.login_failed")]
    assert reasons == ["wrong password"] * 3 + ["account locked", "unknown or disabled user"]


def test_post_without_csrf_token_is_refused(node, browserless):
    page = browserless.get("/ui/login")
    r = browserless.post("/ui/login", data={"username": "rad", "password": "rad-password-1"})
    assert r.status_code == 403
    r = browserless.post("/ui/login", data={"username": "rad", "password": "rad-password-1",
                                            "csrf_token": "forged"})
    assert r.status_code == 403
    assert sign_in(browserless, "rad").status_code == 303
    assert browserless.post("/ui/logout", data={}).status_code == 403
    assert browserless.post("/ui/logout", data={"csrf_token": csrf_of(page.text)}
                            ).status_code == 403  # the sign-in token is not the session's
    home = browserless.get("/ui/")
    assert home.status_code == 200
    r = browserless.post("/ui/logout", data={"csrf_token": csrf_of(home.text)})
    assert r.status_code == 303
    assert browserless.get("/ui/").status_code == 303  # signed out: the session is gone


def test_radiologist_cannot_open_admin_pages(node, browserless):
    sign_in(browserless, "rad")
    for path in ("/ui/admin/audit", "/ui/admin/deliveries", "/ui/admin/queues",
                 "/ui/admin/config"):
        assert browserless.get(path).status_code == 403, path
    assert len(_events(node, "ui.forbidden")) == 4


def test_admin_opens_admin_pages(node, browserless):
    sign_in(browserless, "boss")
    for path in ("/ui/admin/audit", "/ui/admin/deliveries", "/ui/admin/queues",
                 "/ui/admin/config"):
        assert browserless.get(path).status_code == 200, path


def test_session_cookie_reads_dicomweb_but_cannot_stow(node, browserless, tmp_path):
    assert browserless.get("/dicomweb/studies").status_code == 401
    sign_in(browserless, "rad")
    r = browserless.get("/dicomweb/studies")
    assert r.status_code == 200 and r.json() == []
    queried = _events(node, "qido.studies")
    assert [e.actor for e in queried] == ["rad"]  # audited under the person
    _, files = write_study(tmp_path / "s", roles=("sag_t2",), n=1)
    body, ctype = build([files[0].read_bytes()], "application/dicom")
    r = browserless.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 401  # the cookie never writes
    assert browserless.post("/admin/studies/1.2.3/resend").status_code == 401
