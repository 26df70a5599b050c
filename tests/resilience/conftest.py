"""Real processes for the resilience tests: node, workers, PACS, private Redis/PostgreSQL.

Each test gets a throwaway database on the shared PostgreSQL (or its own cluster where it
restarts the server) and a private redis-server, so a test that kills or restarts something
touches nothing another test or engineer uses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import _harness


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_harness.RedisServer]:
    """A private redis-server for the session; tests that restart Redis start their own."""
    server = _harness.RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture()
def database_url() -> Iterator[str]:
    try:
        with _harness.throwaway_database() as url:
            yield url
    except Exception as exc:  # psycopg.OperationalError when the server is down
        if "CREATE DATABASE" in str(exc) or "connect" in str(exc).lower():
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required: {exc}")
        raise


@pytest.fixture()
def make_stack(tmp_path: Path, database_url: str,
               redis_server: _harness.RedisServer) -> Iterator[Callable[..., _harness.Stack]]:
    """Builds (not starts) stacks on this test's database; stops them all afterwards."""
    stacks: list[_harness.Stack] = []

    def make(workdir: Path | None = None, **kwargs: Any) -> _harness.Stack:
        kwargs.setdefault("database_url", database_url)
        kwargs.setdefault("broker_url", redis_server.url)
        stack = _harness.Stack(workdir or tmp_path / f"stack{len(stacks)}", **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
