"""The compose wiring without containers: PACS → node service → the Redis list KEDA watches.

The `migrate` and `node` services' own commands and environment (docker-compose.yml) run as
processes against the real PostgreSQL and Redis on loopback; only addresses, ports and the data
folder change. Orthanc, with the shipped routing, sends a lumbar MR study; the node must take
it, close it and publish `process_study` onto the Redis list that keda-scaledobject.yaml scales
the GPU workers on.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
import yaml
from _harness import Process, free_port, port_open, throwaway_database, wait_for
from deploy_files import DEPLOY, K8S, load_compose, read_env_file
from dicom_samples import make_mr_series
from orthanc import Modality, OrthancServer, orthanc_binary

from dicom_node.tasks import PROCESS_STUDY

pytestmark = pytest.mark.slow

REDIS_URL = "redis://127.0.0.1:6379/0"
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


@pytest.fixture()
def database() -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(throwaway_database(prefix="lumbar_deploy_"))
        except psycopg.OperationalError as exc:
            pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is required: {exc}")
        yield url


@pytest.fixture()
def broker_prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis on 127.0.0.1:6379 is required: {exc}")
    prefix = f"deploy-{secrets.token_hex(4)}:"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


def service_env(compose: dict, name: str, **changes: str) -> dict[str, str]:
    env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
    env.update(changes)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def test_pacs_to_node_to_gpu_queue(
    tmp_path: Path, database: str, broker_prefix: str
) -> None:
    if orthanc_binary() is None:
        pytest.skip("Orthanc is not installed")
    compose = load_compose(read_env_file(DEPLOY / "env.example"))
    dimse_port = free_port()
    local = {
        "LUMBAR_NODE_DATABASE_URL": database,
        "LUMBAR_NODE_BROKER_URL": REDIS_URL,
        "LUMBAR_NODE_RESULT_BACKEND": REDIS_URL,
        "LUMBAR_NODE_BROKER_KEY_PREFIX": broker_prefix,
        "LUMBAR_NODE_DATA_DIR": str(tmp_path / "data"),
        "LUMBAR_NODE_SPOOL_DIR": str(tmp_path / "data" / "spool"),
        "LUMBAR_NODE_DIMSE_HOST": "127.0.0.1",
        "LUMBAR_NODE_DIMSE_PORT": str(dimse_port),
        "LUMBAR_NODE_HTTP_HOST": "127.0.0.1",
        "LUMBAR_NODE_HTTP_PORT": str(free_port()),
        "LUMBAR_NODE_SETTLE_SECONDS": "1",
        "LUMBAR_NODE_STUDY_TIMEOUT_SECONDS": "2",
    }
    migrate = subprocess.run(
        ["lumbar-node", *compose["services"]["migrate"]["command"]],
        env=service_env(compose, "migrate", **local), cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert migrate.returncode == 0, migrate.stderr

    node_env = service_env(compose, "node", **local)
    node = Process("node", ["lumbar-node", *compose["services"]["node"]["command"]],
                   tmp_path / "node.log", env=node_env, cwd=tmp_path).start()
    queue = broker_prefix + keda_list_name()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        wait_for(lambda: not node.alive or port_open(dimse_port), 60, "the node's DICOM port")
        assert node.alive, node.log.read_text()[-3000:]
        files = make_mr_series(tmp_path / "study", slices=3)
        node_ae = Modality(node_env["LUMBAR_NODE_AE_TITLE"], "127.0.0.1", dimse_port)
        pacs_aet = node_env["LUMBAR_NODE_ALLOWED_CALLERS"]
        with OrthancServer(tmp_path / "pacs", destination=node_ae, aet=pacs_aet,
                           stable_age=1) as pacs:
            pacs.upload(files)
            try:
                wait_for(lambda: client.llen(queue) > 0, 60, f"a message on {queue}",
                         interval=0.3)
            except TimeoutError as error:
                raise AssertionError(
                    f"{error}\nnode log:\n{node.log.read_text()[-3000:]}"
                ) from None
    finally:
        node.stop(timeout=20)
    (raw,) = client.lrange(queue, 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == PROCESS_STUDY


def keda_list_name() -> str:
    scaled = yaml.safe_load((K8S / "keda-scaledobject.yaml").read_text())
    return str(scaled["spec"]["triggers"][0]["metadata"]["listName"])
