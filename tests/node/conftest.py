"""Fixtures: a throwaway PostgreSQL database per session, SQLite per test, node configs."""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import _harness
import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).parent))

from dicom_node.config import NodeConfig, load_config
from dicom_node.db import migrate
from dicom_node.db.session import make_engine, make_sessionmaker


def _throwaway_database() -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(_harness.throwaway_database(prefix="lumbar_node_test_"))
        except psycopg.OperationalError as exc:
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required: {exc}")
        migrate.upgrade(url)
        yield url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this test session (or xdist worker); tests on it
    roll back (see pg_sessions)."""
    yield from _throwaway_database()


@pytest.fixture()
def own_pg_url() -> Iterator[str]:
    """A database of the test's own, for multi-process tests whose commits cannot be rolled
    back (serve + worker)."""
    yield from _throwaway_database()


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture()
def pg_sessions(pg_engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions on one connection whose outer transaction is rolled back after the test:
    the code under test commits (savepoints), the database is left as it was."""
    with pg_engine.connect() as conn:
        outer = conn.begin()
        yield sessionmaker(bind=conn, join_transaction_mode="create_savepoint",
                           expire_on_commit=False)
        outer.rollback()


@pytest.fixture()
def node_config(tmp_path: Path) -> NodeConfig:
    config = load_config(
        env={},
        data_dir=tmp_path / "data",
        allowed_callers="PACS,STOWER",
        dimse_host="127.0.0.1",
        dimse_port=_harness.free_port(),
        http_host="127.0.0.1",
        http_port=_harness.free_port(),
        settle_seconds=0.3,
        study_timeout_seconds=2.0,
        api_token="secret-token",
    )
    migrate.upgrade(config.db_url)
    return config


@pytest.fixture()
def sessions(node_config: NodeConfig) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(node_config.db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    """A key prefix unique to this test, removed afterwards."""
    import redis

    prefix = f"lumbar-test-{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture()
def stack_config(node_config: NodeConfig, own_pg_url: str, redis_prefix: str) -> NodeConfig:
    """The production shape: PostgreSQL and Redis over loopback."""
    return node_config.replace(database_url=own_pg_url, broker_url="redis://127.0.0.1:6379/0",
                               broker_key_prefix=redis_prefix, scheduler_interval_seconds=0.3,
                               job_retry_delay_seconds=0.5)


@pytest.fixture()
def start_worker(tmp_path: Path) -> Iterator[object]:
    """Starts `lumbar-node worker` subprocesses for a config; stops them after the test."""
    import os

    from workers.env import config_env

    procs: list[_harness.Process] = []

    def start(config: NodeConfig, queues: str = "gpu,io") -> _harness.Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUMBAR_NODE_")}
        env.update(config_env(config))
        name = f"worker-{len(procs)}"
        proc = _harness.Process(name, [
            sys.executable, "-m", "workers.cli", "worker", "--queues", queues, "--device", "cpu",
            "--hostname", f"test-{secrets.token_hex(3)}@%h"], tmp_path / f"{name}.log", env=env)
        procs.append(proc.start())
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_sessions(request: pytest.FixtureRequest) -> sessionmaker[Session]:
    """The same test on the embedded database and on PostgreSQL."""
    return request.getfixturevalue("sessions" if request.param == "sqlite" else "pg_sessions")
