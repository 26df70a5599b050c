"""The workers' health check command, run for real against a Celery worker on local Redis.

The check is the exact command string of docker-compose.yml (and the worker image); it must
pass while `lumbar-node worker --queues io` runs and fail once the worker is gone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from deploy_files import DEPLOY, REPO, load_compose, read_env_file
from orthanc import wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
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


def test_healthcheck_passes_with_a_worker_and_fails_without(worker_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    lumbar_node = shutil.which("lumbar-node", path=worker_env["PATH"])
    assert lumbar_node, "lumbar-node console script not installed"
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([lumbar_node, "worker", "--queues", "io"], env=worker_env,
                              cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "ready" in (tmp_path / "worker.log").read_text(), 60,
                   "the io worker to be ready", interval=0.3)
        ok = run_check(worker_env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "pong" in ok.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
    gone = run_check(worker_env)
    assert gone.returncode != 0
