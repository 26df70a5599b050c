"""Fixtures of the review console tests: a node serving HTTP on a throwaway PostgreSQL
database with two users, a client that signs in through the real form (CSRF cookie and
field included), and the path rewrite of a reverse proxy serving the node under a prefix."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _harness
import httpx
import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from dicom_node.config import NodeConfig, load_config
from dicom_node.db import migrate
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
    config = load_config(env={}, data_dir=tmp_path / "data", allowed_callers="PACS",
                         dimse_host="127.0.0.1", dimse_port=_harness.free_port(),
                         http_host="127.0.0.1", http_port=_harness.free_port(),
                         settle_seconds=0.3, study_timeout_seconds=2.0,
                         api_token="secret-token", **overrides)
    migrate.upgrade(config.db_url)
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


@pytest.fixture()
def console_db() -> Iterator[str]:
    """A PostgreSQL database of the test's own (the node commits from its own threads, so
    nothing can be rolled back); dropped afterwards."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(
                _harness.throwaway_database(prefix="lumbar_console_test_"))
        except psycopg.OperationalError as exc:
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required: {exc}")
        yield url


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "console_config(**settings): node settings of the "
                                       "test's `config` (e.g. agreement_min_reviews=3)")


@pytest.fixture()
def config(request: pytest.FixtureRequest, tmp_path: Path, console_db: str) -> NodeConfig:
    marker = request.node.get_closest_marker("console_config")
    settings = {"login_max_failures": 3, "login_lockout_seconds": 600,
                **(marker.kwargs if marker else {})}
    return console_config(tmp_path, database_url=console_db, **settings)


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


@pytest.fixture()
def node(config: NodeConfig) -> Iterator[object]:
    from nodekit import wait_port

    from dicom_node.serve import Node

    node = Node(config, scheduler=False)
    node.start()
    wait_port(config.http_port)
    yield node
    node.stop()


@pytest.fixture()
def browserless(config: NodeConfig, node: object) -> Iterator[httpx.Client]:
    """A cookie-keeping client with no bearer token: what a browser is to the node."""
    with httpx.Client(base_url=f"http://127.0.0.1:{config.http_port}", timeout=30,
                      follow_redirects=False) as client:
        yield client
