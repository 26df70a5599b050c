"""Extra C-STORE receiver processes sharing the node's DICOM port.

pynetdicom handles each association in Python threads, so one process tops out at about one
core however many PACS send at once. With ``DIMSE_PROCESSES=N`` the serve process binds the
port with SO_REUSEPORT and starts N-1 siblings that bind it too; the kernel spreads new
associations over all of them. Siblings only receive: the scheduler, HTTP and the outbox stay
in the serve process, and everything a sibling writes goes through the shared spool and
database, so no state has to be handed back.

A sibling asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), so a serve
process killed with SIGKILL does not leave receivers holding the port.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.process import BaseProcess
from typing import Any

from dicom_node.config import NodeConfig

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
READY_TIMEOUT_SECONDS = 60.0


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent's stop() still ends us
        log.warning("cannot ask to be stopped with the serve process on this platform")


def _receiver(config: NodeConfig, parent_pid: int, loglevel: int, ready: Any) -> None:
    """Entry point of one sibling: an SCP and nothing else, until SIGTERM."""
    _die_with_parent()
    logging.basicConfig(level=loglevel,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, loglevel))
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        return
    from dicom_node.db.session import make_engine, make_sessionmaker
    from dicom_node.dimse.scp import StoreSCP
    from dicom_node.ingest import quiet_value_checks

    quiet_value_checks()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    engine = make_engine(config.db_url)
    # its own index writer (StoreSCP makes one): a sibling shares nothing with serve but
    # the spool and the database, and a file it acknowledged but did not index before it
    # died is found by serve's sweep
    scp = StoreSCP(config, make_sessionmaker(engine))
    scp.start(reuse_port=True)
    ready.set()
    done.wait()
    scp.stop()
    engine.dispose()


class ReceiverProcesses:
    """The N-1 siblings of the serve process's own SCP."""

    def __init__(self, config: NodeConfig) -> None:
        if config.dimse_processes < 1:
            raise ValueError(f"DIMSE_PROCESSES must be at least 1, got {config.dimse_processes}")
        if config.dimse_processes > 1 and config.dimse_port == 0:
            raise ValueError("DIMSE_PROCESSES > 1 needs a fixed DIMSE_PORT, not 0")
        self.config = config
        self.processes: list[BaseProcess] = []

    @property
    def shared(self) -> bool:
        return self.config.dimse_processes > 1

    def start(self) -> None:
        # spawn, not fork: the serve process already runs threads and holds DB connections
        ctx = multiprocessing.get_context("spawn")
        level = logging.getLogger().getEffectiveLevel()
        events = []
        for index in range(1, self.config.dimse_processes):
            ready = ctx.Event()
            proc = ctx.Process(target=_receiver, args=(self.config, os.getpid(), level, ready),
                               name=f"dimse-receiver-{index}", daemon=True)
            proc.start()
            self.processes.append(proc)
            events.append(ready)
        # serve reports itself up only when every receiver listens, so an orchestrator's
        # readiness probe (or a benchmark) never measures a half-started node
        for proc, ready in zip(self.processes, events, strict=True):
            if not ready.wait(READY_TIMEOUT_SECONDS):
                self.stop()
                raise RuntimeError(f"{proc.name} did not start listening within "
                                   f"{READY_TIMEOUT_SECONDS} s (exit code {proc.exitcode})")
        if self.processes:
            log.info("%d extra DICOM receiver processes share port %s",
                     len(self.processes), self.config.dimse_port)

    def alive(self) -> int:
        return sum(1 for p in self.processes if p.is_alive())

    def stop(self, timeout: float = 10.0) -> None:
        for proc in self.processes:
            if proc.is_alive():
                proc.terminate()
        for proc in self.processes:
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        self.processes.clear()
