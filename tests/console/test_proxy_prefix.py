"""The console behind a reverse proxy that serves the node under a path prefix
(PUBLIC_BASE_URL=https://pacs.example.org/lumbar): every link, form action, redirect and
cookie path carries the prefix, so a browser that only ever talks to the proxy can sign
in, review, send a corrected report, use the admin pages and sign out."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from consolekit import PASSWORDS, PrefixProxy, add_analysed_study, console_config, csrf_of
from fastapi.testclient import TestClient
from sqlalchemy import select

from dicom_node.db.models import Review
from dicom_node.db.session import make_engine, make_sessionmaker
from dicom_node.http.app import create_app

PREFIX = "/lumbar"
UID = "1.2.826.0.1.3680043.10.543.778"
_LINK = re.compile(r'(?:href|src|action)="([^"]*)"')


def _links(page: str) -> list[str]:
    return [html.unescape(u) for u in _LINK.findall(page)]


@pytest.fixture()
def proxied(tmp_path: Path, console_db: str) -> Iterator[tuple[TestClient, object]]:
    from test_reviews import _findings_doc

    config = console_config(tmp_path, database_url=console_db,
                            public_base_url=f"https://pacs.example.org{PREFIX}/")
    engine = make_engine(config.db_url)
    sessions = make_sessionmaker(engine)
    add_analysed_study(sessions, UID, {**_findings_doc(), "study_instance_uid": UID},
                       tmp_path, patient_id="P2")
    app = PrefixProxy(create_app(config, sessions), PREFIX)
    try:
        # paths are given whole, as a browser follows them: the proxy sees them as they are
        with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
            yield client, sessions
    finally:
        engine.dispose()


def _sign_in(client: TestClient, name: str) -> None:
    first = client.get(f"{PREFIX}/ui/")
    assert first.status_code == 303
    login_url = first.headers["location"]
    assert login_url == f"{PREFIX}/ui/login?next=%2Fui%2F"
    page = client.get(login_url)
    assert page.status_code == 200
    assert f'action="{PREFIX}/ui/login"' in page.text
    assert f"Path={PREFIX}/ui/login" in page.headers["set-cookie"]
    r = client.post(f"{PREFIX}/ui/login", data={
        "username": name, "password": PASSWORDS[name], "csrf_token": csrf_of(page.text),
        "next": "/ui/"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"{PREFIX}/ui/"


def test_every_console_link_carries_the_public_prefix(proxied):
    client, _ = proxied
    assert client.get(f"{PREFIX}/ui/login").status_code == 200  # through the proxy
    assert client.get("/ui/login").status_code == 404  # a path without the prefix: lost
    _sign_in(client, "boss")
    pages = [f"{PREFIX}{p}" for p in ("/ui/", f"/ui/studies/{UID}", "/ui/agreement",
                                      "/ui/admin/audit", "/ui/admin/deliveries",
                                      "/ui/admin/queues", "/ui/admin/config")]
    seen = set()
    for path in pages:
        page = client.get(path)
        assert page.status_code == 200, path
        for url in _links(page.text):
            assert url.startswith(f"{PREFIX}/") or url.startswith("#"), (path, url)
            seen.add(url)
    assert f"{PREFIX}/ui/static/console.css" in seen
    assert f"{PREFIX}/viewer/viewer?StudyInstanceUIDs={UID}" in seen
    assert f"{PREFIX}/ui/studies/{UID}/reviews" in seen
    for url in sorted(seen):  # every page and file a link names is there
        if "/viewer/" in url or url.endswith(("/reviews", "/corrected-report", "/logout")):
            continue  # the viewer is not installed here; forms are posted below
        if url.startswith(f"{PREFIX}/ui/login"):
            continue  # signed in already
        assert client.get(url).status_code == 200, url
    csv_link = next(u for u in seen if "format=csv" in u)
    assert client.get(csv_link).headers["content-type"].startswith("text/csv")


def test_forms_and_redirects_stay_under_the_prefix(proxied):
    client, sessions = proxied
    _sign_in(client, "rad")
    page = client.get(f"{PREFIX}/ui/studies/{UID}").text
    action = f"{PREFIX}/ui/studies/{UID}/reviews"
    assert f'action="{action}"' in page
    key = "spinal_canal_stenosis_l4_l5"
    r = client.post(action, data={"csrf_token": csrf_of(page), "finding_key": key,
                                  "verdict": "correct", "value": "Moderate"})
    assert r.status_code == 303 and r.headers["location"] == f"{PREFIX}/ui/studies/{UID}#{key}"
    with sessions() as s:
        assert s.scalar(select(Review.corrected_value)) == "Moderate"
    page = client.get(f"{PREFIX}/ui/studies/{UID}").text
    r = client.post(f"{PREFIX}/ui/studies/{UID}/corrected-report",
                    data={"csrf_token": csrf_of(page)})
    assert r.status_code == 303
    assert r.headers["location"] == f"{PREFIX}/ui/studies/{UID}#versions"
    r = client.post(f"{PREFIX}/ui/logout", data={"csrf_token": csrf_of(page)})
    assert r.status_code == 303 and r.headers["location"] == f"{PREFIX}/ui/login"
    r = client.get(f"{PREFIX}/ui/studies/{UID}")  # signed out: to the sign-in and back here
    assert r.headers["location"] == f"{PREFIX}/ui/login?next=%2Fui%2Fstudies%2F{UID}"
