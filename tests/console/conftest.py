"""Fixtures of the review console tests: a node serving HTTP on a throwaway PostgreSQL
database with two users, a client that signs in through the real form (CSRF cookie and
field included), and the path rewrite of a reverse proxy serving the node under a prefix."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import _harness
import httpx
import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))
sys.path.insert(0, str(Path(__file__).parent))

from consolekit import console_config

from dicom_node.config import NodeConfig


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
