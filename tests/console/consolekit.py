"""Helpers of the review console tests (kept out of conftest.py so test modules import them
by a name no other test folder uses): users and their passwords, signing in through the real
form, a console node configuration, and a reverse proxy's path prefix."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from nodekit import loopback_config
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import NodeConfig
from dicom_node.db.models import Job, ResultObject, Study
from dicom_node.db.session import make_engine, make_sessionmaker, transaction
from dicom_node.http.auth import add_user

PASSWORDS = {"rad": "rad-password-1", "boss": "boss-password-1"}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


def sign_in(client: httpx.Client, name: str, password: str | None = None) -> httpx.Response:
    page = client.get("/ui/login")
    return client.post("/ui/login", data={
        "username": name, "password": PASSWORDS.get(name, "") if password is None else password,
        "csrf_token": csrf_of(page.text), "next": "/ui/"})


def console_config(tmp_path: Path, **overrides: object) -> NodeConfig:
    config = loopback_config(tmp_path / "data", "secret-token", settle_seconds=0.3,
                             study_timeout_seconds=2.0, **overrides)
    add_users(config.db_url)
    return config


def add_users(url: str) -> None:
    engine = make_engine(url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            add_user(session, "rad", "radiologist", PASSWORDS["rad"], actor="test")
            add_user(session, "boss", "admin", PASSWORDS["boss"], actor="test")
    finally:
        engine.dispose()


class PrefixProxy:
    """What a reverse proxy serving the node at `<prefix>/` does to paths: strips the
    prefix before the node sees the request, and answers 404 for anything outside it, so a
    link the console builds without the prefix fails as it would in a browser."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and not path.startswith(self.prefix + "/"):
            from starlette.responses import PlainTextResponse

            await PlainTextResponse("not behind the proxy prefix", 404)(scope, receive, send)
            return
        if scope["type"] == "http":
            scope = {**scope, "path": path[len(self.prefix):],
                     "raw_path": path[len(self.prefix):].encode()}
        await self.app(scope, receive, send)


def add_analysed_study(sessions: sessionmaker[Session], uid: str, document: dict,
                       folder: Path, patient_id: str = "P1",
                       sr_sop_uid: str | None = None) -> int:
    """A processed study whose finished job holds ``document`` as its findings.json (and,
    with ``sr_sop_uid``, a delivered SR to supersede): the state the console reviews."""
    path = folder / "findings.json"
    path.write_text(json.dumps(document))
    with transaction(sessions) as s:
        study = Study(study_instance_uid=uid, patient_id=patient_id, calling_ae="PACS",
                      state="processed", modalities="MR")
        s.add(study)
        s.flush()
        job = Job(study_id=study.id, state="done", result_status="complete")
        s.add(job)
        s.flush()
        s.add(ResultObject(job_id=job.id, kind="findings", path=str(path), sha256="0" * 64))
        if sr_sop_uid:
            s.add(ResultObject(job_id=job.id, kind="sr", path=str(folder / "sr.dcm"),
                               sha256="0" * 64, sop_instance_uid=sr_sop_uid))
    return job.id
