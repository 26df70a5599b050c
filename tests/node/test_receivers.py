"""Several C-STORE receiver processes on one DICOM port (DIMSE_PROCESSES)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _harness import wait_for
from nodekit import storescu, wait_port, write_study
from sqlalchemy import func, select

from dicom_node.config import NodeConfig
from dicom_node.db.models import AuditEvent, Instance, Study
from dicom_node.dimse.processes import ReceiverProcesses
from dicom_node.serve import Node

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _receivers(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:  # exited between the listing and the read
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_associations_spread_over_processes_and_nothing_is_lost(
        tmp_path: Path, node_config: NodeConfig, sessions) -> None:
    config = node_config.replace(dimse_processes=2)
    node = Node(config, http=False, scheduler=False)
    node.start()
    try:
        assert node.receivers.alive() == 1
        studies = [write_study(tmp_path / f"s{i}", n=2, roles=("sag_t2", "sag_t1"))
                   for i in range(12)]
        with ThreadPoolExecutor(6) as pool:
            done = list(pool.map(lambda s: storescu(config.dimse_port, s[1]), studies))
        assert all(d.returncode == 0 for d in done), [d.stderr[-300:] for d in done]
    finally:
        node.stop()
    with sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 12 * 4
        assert s.scalar(select(func.count(Study.id))) == 12
        pids = {e.detail["receiver_pid"] for e in s.scalars(select(AuditEvent).where(
            AuditEvent.event_type == "association.accepted"))}
    # 12 associations all hashed to one of two sockets would happen once in 2048 runs
    assert len(pids) == 2 and os.getpid() in pids
    assert node.receivers.alive() == 0


def test_receivers_need_a_fixed_port(node_config: NodeConfig) -> None:
    with pytest.raises(ValueError, match="fixed DIMSE_PORT"):
        ReceiverProcesses(node_config.replace(dimse_processes=2, dimse_port=0))
    with pytest.raises(ValueError, match="at least 1"):
        ReceiverProcesses(node_config.replace(dimse_processes=0))


def test_receivers_load_no_torch_and_die_with_a_killed_serve(node_config: NodeConfig) -> None:
    from workers.env import config_env

    env = {**os.environ, **config_env(node_config.replace(dimse_processes=3)),
           "PYTHONUNBUFFERED": "1"}
    serve = subprocess.Popen([sys.executable, "-m", "workers.cli", "serve", "--no-http"],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=False)
    try:
        wait_port(node_config.dimse_port, timeout=60)
        wait_for(lambda: len(_receivers(serve.pid)) == 2, 60, "two receivers")
        children = _children(serve.pid)  # the receivers and multiprocessing's own helper
        for pid in [serve.pid, *_receivers(serve.pid)]:
            # the receiving processes must keep taking studies while GPUs are busy: no torch
            assert "libtorch" not in Path(f"/proc/{pid}/maps").read_text(), pid
        serve.send_signal(signal.SIGKILL)
        serve.wait(10)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in children), "receivers outlived serve"
    finally:
        if serve.poll() is None:
            serve.kill()
