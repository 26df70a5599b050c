"""The images' health checks, run for real: against `lumbar-node serve` and a Celery worker.

Each check is the exact command of the Dockerfile or docker-compose.yml; it must pass while
the process runs and fail once it is gone.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from _harness import Process, free_port, wait_for
from deploy_files import DEPLOY, REPO, dockerfile_instructions, load_compose, read_env_file
from tls_certs import issue, make_ca

pytestmark = pytest.mark.slow

REDIS_URL = "redis://127.0.0.1:6379/0"
NODE_DOCKERFILE = DEPLOY / "docker" / "node.Dockerfile"
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture()
def worker_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    if not redis_up():
        pytest.skip("Redis on 127.0.0.1:6379 is required")
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    prefix = f"healthcheck-{secrets.token_hex(4)}:"
    yield {
        "PATH": path,
        "HOME": str(tmp_path),
        "HOSTNAME": socket.gethostname(),
        "LUMBAR_NODE_DATA_DIR": str(tmp_path / "data"),
        "LUMBAR_NODE_BROKER_URL": REDIS_URL,
        # a private key space: parallel tests and other users of this Redis never see it
        "LUMBAR_NODE_BROKER_KEY_PREFIX": prefix,
    }
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


def healthcheck_command() -> str:
    compose = load_compose(read_env_file(DEPLOY / "env.example"))
    kind, command = compose["services"]["worker-io"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    return command


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", healthcheck_command()], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def test_worker_healthcheck_passes_with_a_worker_and_fails_without(worker_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    lumbar_node = shutil.which("lumbar-node", path=worker_env["PATH"])
    assert lumbar_node, "lumbar-node console script not installed"
    with Process("worker", [lumbar_node, "worker", "--queues", "io"], tmp_path / "worker.log",
                 env=worker_env, cwd=tmp_path).start() as worker:
        wait_for(lambda: "ready" in worker.log.read_text(), 60, "the io worker to be ready",
                 interval=0.3)
        ok = run_check(worker_env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "pong" in ok.stdout
    gone = run_check(worker_env)
    assert gone.returncode != 0


def node_healthcheck_argv() -> list[str]:
    """The node image's HEALTHCHECK, with the script's in-image path mapped to the repo."""
    (check,) = [a for op, a in dockerfile_instructions(NODE_DOCKERFILE) if op == "HEALTHCHECK"]
    argv = json.loads(check.split("CMD", 1)[1])
    copies = dict(reversed(a.split()) for op, a in dockerfile_instructions(NODE_DOCKERFILE)
                  if op == "COPY" and len(a.split()) == 2)
    script = Path(argv[1])
    assert argv[0] == "python" and script.parent == Path("/opt/lumbar-node")
    return [sys.executable, str(REPO / copies["./" + script.name])]


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_node_healthcheck_follows_the_node(tmp_path: Path, tls: bool) -> None:
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "LUMBAR_NODE_DATA_DIR": str(tmp_path / "data"),
        "LUMBAR_NODE_DIMSE_HOST": "127.0.0.1",
        "LUMBAR_NODE_DIMSE_PORT": str(free_port()),
        "LUMBAR_NODE_HTTP_HOST": "127.0.0.1",
        "LUMBAR_NODE_HTTP_PORT": str(free_port()),
        "LUMBAR_NODE_ALLOWED_CALLERS": "ORTHANC",
    }
    if tls:
        files = issue(tmp_path / "tls", "lumbar-node", make_ca(tmp_path / "ca"))
        env.update(LUMBAR_NODE_TLS_CERT=str(files.cert), LUMBAR_NODE_TLS_KEY=str(files.key))
    check = node_healthcheck_argv()

    def healthy() -> bool:
        done = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30,
                              check=False)
        return done.returncode == 0 and '"status":"ok"' in done.stdout.replace(" ", "")

    with Process("serve", ["lumbar-node", "serve", "--upgrade-db"], tmp_path / "serve.log",
                 env=env, cwd=tmp_path).start() as serve:
        try:
            wait_for(healthy, 60, "the node health check to pass", interval=0.5)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{serve.log.read_text()[-2000:]}") from None
    assert not healthy()
