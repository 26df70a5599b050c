"""Real processes on loopback for the benchmarks and the resilience tests.

Everything here starts the same programs a site runs (`lumbar-node serve`, `lumbar-node
worker`, dcmtk's storescp as the PACS, redis-server, a PostgreSQL cluster) on free ports with
throwaway state, so a number or a failure describes the product, not a stand-in. Every
starter is a context manager and also has ``stop()``; nothing outlives the caller.

Tests import this module through ``sys.path`` (benchmarks/ is not a package); the process
and polling primitives of `_process` are re-exported here, so ``_harness`` is the one import.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from _process import Process, free_port, port_open
from _process import wait_for as wait_for

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else sys.executable
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- state servers ----------------------------------------------------------------------


class RedisServer(Process):
    """A private redis-server without persistence, so a restart loses every queued message."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__("redis-server", [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir)], workdir / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        super().start()
        self.await_ready(lambda: port_open(self.port), 15, "redis-server")
        return self

    def restart(self, down_seconds: float = 0.0) -> None:
        self.kill9()
        time.sleep(down_seconds)
        self.start()


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"PostgreSQL {name} not found under /usr/lib/postgresql")
    return str(found[-1])


class PgCluster:
    """A throwaway PostgreSQL cluster (initdb) on a free port, owned by the postgres user
    when run as root, so it can be stopped and started without touching the shared server."""

    def __init__(self) -> None:
        import tempfile

        self.port = free_port()
        # its own folder under /tmp: callers' temporary folders are private to root
        self.workdir = Path(tempfile.mkdtemp(prefix="lumbar-pg-"))
        self.data = self.workdir / "pgdata"
        self.log = self.workdir / "postgres.log"

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {done.stderr.strip()[-500:]}")

    def init(self) -> PgCluster:
        self.workdir.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync")
        return self.start()

    def start(self) -> PgCluster:
        opts = f"-p {self.port} -k {self.workdir} -h 127.0.0.1 -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts,
                  "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop("immediate")
        time.sleep(down_seconds)
        self.start()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> PgCluster:
        return self.init()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Stop the server and delete the cluster."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def throwaway_database(admin_url: str = PG_ADMIN,
                       prefix: str = "lumbar_resilience_") -> Iterator[str]:
    """A fresh database on an existing server; dropped afterwards. Yields its SQLAlchemy URL.
    The ``prefix`` tells whose database a leftover one is."""
    import psycopg

    name = f"{prefix}{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- DICOM peers --------------------------------------------------------------------------


def dcmtk_env() -> dict[str, str]:
    """dcmtk disables Nagle only when told to; without it a benchmark measures delayed ACKs."""
    return {**os.environ, "TCP_NODELAY": "1"}


class Storescp(Process):
    """dcmtk storescp as the PACS that receives results: unique file names keep duplicates
    and every transfer syntax is accepted, unless a test needs a stock PACS that overwrites
    a re-sent instance or refuses what it was not configured for."""

    def __init__(self, workdir: Path, ae_title: str = "PACS", port: int | None = None,
                 fsync: bool = False, *, unique_filenames: bool = True,
                 accept_all: bool = True) -> None:
        self.port = port or free_port()
        self.out = workdir / "received"
        self.ae_title = ae_title
        argv = ["storescp", "--aetitle", ae_title, "--output-directory", str(self.out),
                *(["--unique-filenames"] if unique_filenames else []),
                *(["--accept-all"] if accept_all else []), str(self.port)]
        super().__init__("storescp", argv, workdir / "storescp.log", env=dcmtk_env())

    def start(self) -> Storescp:
        self.out.mkdir(parents=True, exist_ok=True)
        super().start()
        self.await_ready(lambda: port_open(self.port), 15, "storescp")
        return self

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file())

    def sop_uids(self) -> list[str]:
        """SOP Instance UID of every file received, repeats kept (to count duplicates)."""
        import pydicom

        return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                for p in self.files()]


def storescu(port: int, files: Sequence[Path], calling: str = "PACS",
             called: str = "LUMBARNODE", extra: Sequence[str] = (),
             timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """dcmtk storescu: one association for all ``files`` (the way a PACS sends a study)."""
    return subprocess.run(
        ["storescu", *extra, "-aet", calling, "-aec", called, "127.0.0.1", str(port),
         *[str(f) for f in files]],
        capture_output=True, text=True, timeout=timeout, env=dcmtk_env())


# --- the node -----------------------------------------------------------------------------


def node_env(config: Any, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a `lumbar-node` child needs to load exactly ``config``."""
    import dataclasses

    from workers.env import config_env

    # the caller's node settings are replaced; other LUMBAR_NODE_* (WEIGHTS_DIR, ...) pass on
    ours = {f"LUMBAR_NODE_{f.name.upper()}" for f in dataclasses.fields(config)}
    env = {k: v for k, v in os.environ.items() if k not in ours and k != "LUMBAR_NODE_CONFIG"}
    env.update(config_env(config))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def stack_config(data_dir: Path, database_url: str, broker_url: str, **overrides: Any) -> Any:
    """Node settings for a loopback stack with short timers (seconds, not minutes).

    The job deadline stays long (15 min): the reconciler republishes a job queued or running
    past it, and a shorter one would start healthy jobs twice under load."""
    from dicom_node.config import load_config

    values: dict[str, Any] = dict(
        data_dir=data_dir, database_url=database_url, broker_url=broker_url,
        broker_key_prefix=f"lumbar-bench-{secrets.token_hex(4)}:", allowed_callers="PACS,STOWER",
        dimse_host="127.0.0.1", dimse_port=free_port(), http_host="127.0.0.1",
        http_port=free_port(), settle_seconds=1.0, study_timeout_seconds=20.0,
        api_token=secrets.token_hex(16), scheduler_interval_seconds=0.3,
        job_retry_delay_seconds=0.5, job_stale_seconds=900, delivery_backoff_seconds=1.0,
        delivery_backoff_cap_seconds=5.0, delivery_max_attempts=30, max_associations=32)
    values.update(overrides)
    return load_config(env={}, **values)


class NodeServer(Process):
    """`lumbar-node serve --upgrade-db` as a child process."""

    def __init__(self, config: Any, workdir: Path, name: str = "serve",
                 loglevel: str = "INFO") -> None:
        self.config = config
        super().__init__(name, [PYTHON, "-m", "workers.cli", "serve", "--upgrade-db",
                                "--loglevel", loglevel], workdir / f"{name}.log",
                         env=node_env(config), cwd=REPO)

    def start(self) -> NodeServer:
        super().start()
        self.await_ready(lambda: port_open(self.config.dimse_port)
                         and port_open(self.config.http_port), 60, "lumbar-node serve")
        return self


class Worker(Process):
    """`lumbar-node worker` on the CPU; ``kill9()`` is a worker dying mid-task."""

    def __init__(self, config: Any, workdir: Path, name: str = "worker",
                 queues: str = "gpu,io", loglevel: str = "INFO") -> None:
        self.config = config
        super().__init__(name, [PYTHON, "-m", "workers.cli", "worker", "--queues", queues,
                                "--device", "cpu", "--loglevel", loglevel,
                                "--hostname", f"{name}-{secrets.token_hex(3)}@%h"],
                         workdir / f"{name}.log", env=node_env(config), cwd=REPO)

    def start(self) -> Worker:
        super().start()
        self.await_ready(lambda: "ready." in self.log.read_text(errors="replace"), 120,
                         f"{self.name} to be ready")
        return self


# --- a whole stack and what must hold after it ran ------------------------------------------


class Stack:
    """Node + workers + a storescp PACS receiving the results, on one database and broker."""

    def __init__(self, workdir: Path, database_url: str, broker_url: str, *, workers: int = 1,
                 pacs: bool = True, loglevel: str = "INFO", io_worker: bool = False,
                 **overrides: Any) -> None:
        """``io_worker``: deliveries get a worker of their own, as deployed, instead of
        sharing the analysis workers (where a send waits behind the next analysis)."""
        self.workdir = workdir
        self.pacs = Storescp(workdir / "pacs") if pacs else None
        if self.pacs is not None:
            overrides.setdefault("destinations", f"PACS@127.0.0.1:{self.pacs.port}")
        self.config = stack_config(workdir / "data", database_url, broker_url, **overrides)
        self.node = NodeServer(self.config, workdir / "logs", loglevel=loglevel)
        # workers log at INFO at least: their start is detected from Celery's "ready." line
        analysis_queues = "gpu" if io_worker else "gpu,io"
        self.workers = [Worker(self.config, workdir / "logs", name=f"worker{i}",
                               queues=analysis_queues) for i in range(workers)]
        if io_worker:
            self.workers.append(Worker(self.config, workdir / "logs", name="io", queues="io"))
        self._engine: Any = None
        self._sessions: Any = None

    @property
    def sessions(self) -> Any:
        if self._sessions is None:
            from dicom_node.db.session import make_engine, make_sessionmaker

            self._engine = make_engine(self.config.db_url)
            self._sessions = make_sessionmaker(self._engine)
        return self._sessions

    def start(self) -> Stack:
        if self.pacs is not None:
            self.pacs.start()
        self.node.start()
        for worker in self.workers:
            worker.start()
        return self

    def stop(self) -> None:
        for proc in [*self.workers, self.node, self.pacs]:
            if proc is not None:
                proc.stop()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = self._sessions = None

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def send(self, files: Sequence[Path], calling: str = "PACS") -> None:
        done = storescu(self.config.dimse_port, files, calling=calling)
        if done.returncode != 0:
            raise RuntimeError(f"storescu failed ({done.returncode}): {done.stderr[-800:]}")

    def logs(self) -> str:
        return "\n".join(p.log.read_text(errors="replace") for p in [self.node, *self.workers]
                         if p.log.exists())


def spool_files(spool: Path) -> list[Path]:
    return sorted(p for p in spool.rglob("*.dcm")) if spool.is_dir() else []
