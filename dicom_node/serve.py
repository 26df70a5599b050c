"""`lumbar-node serve`: the DICOM SCP, the HTTP server and the scheduler in one process.

The scheduler is one loop over database queries: close studies that have settled, relay
the outbox to the broker, and every few ticks re-queue stuck jobs and due deliveries and
sweep the spool for files without an index row. Nothing is kept in memory that a restart
would lose: an instance acknowledged but not yet indexed is a file in the spool, and the
sweep at startup indexes it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import NodeConfig

log = logging.getLogger(__name__)
RECONCILE_EVERY_TICKS = 10


class Scheduler:
    def __init__(self, config: NodeConfig, sessions: sessionmaker[Session],
                 publish: Any | None, sweeper: Any | None = None) -> None:
        self.config, self.sessions, self.publish = config, sessions, publish
        self.sweeper = sweeper
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self._swept_at: float | None = None

    def tick(self) -> None:
        from dicom_node.outbox import relay
        from dicom_node.reconcile import reconcile
        from dicom_node.studies import close_due_studies

        now = time.monotonic()
        if self.sweeper is not None and (
                self._swept_at is None
                or now - self._swept_at >= self.config.index_sweep_seconds):
            self.sweeper.sweep()  # first: a study must not close before its swept files
            self._swept_at = now
        close_due_studies(self.sessions, self.config)
        if self.ticks % RECONCILE_EVERY_TICKS == 0:
            reconcile(self.sessions, self.config)
        if self.publish is not None:
            relay(self.sessions, self.publish)
        self.ticks += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep scheduling; the next tick retries from the database
                log.exception("scheduler tick failed")
            self._stop.wait(self.config.scheduler_interval_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)


class Node:
    """SCP + HTTP + scheduler, startable in-process (tests, demo) or from the CLI."""

    def __init__(self, config: NodeConfig, *, http: bool = True, scheduler: bool = True,
                 publish: Any | None = None) -> None:
        from dicom_node.db.session import make_engine, make_sessionmaker
        from dicom_node.indexer import Indexer
        from dicom_node.ingest import Ingestor
        from dicom_node.instance_index import InstanceIndex
        from dicom_node.sweep import Sweeper

        self.config = config
        config.spool.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(config.db_url)
        self.sessions = make_sessionmaker(self.engine)
        self.indexer = Indexer(self.sessions, InstanceIndex(config.max_instances_per_study))
        self.ingestor = Ingestor(config, self.sessions, self.indexer)
        self._publisher: Any = None
        if scheduler and publish is None:
            from dicom_node.broker import Publisher

            self._publisher = publish = Publisher(config)
        # the sweep runs in the scheduler, the one loop of serve: siblings only receive
        sweeper = Sweeper(config.spool, self.sessions,
                          InstanceIndex(config.max_instances_per_study),
                          grace_seconds=max(config.index_sweep_seconds, 5.0))
        self.scheduler = Scheduler(config, self.sessions, publish, sweeper) \
            if scheduler else None
        self.http_enabled = http
        self._http_server: Any = None
        self._http_thread: threading.Thread | None = None
        self.scp: Any = None
        self.receivers: Any = None

    def start(self) -> None:
        from dicom_node.dimse.processes import ReceiverProcesses
        from dicom_node.dimse.scp import StoreSCP

        self.indexer.start()
        self.receivers = ReceiverProcesses(self.config)
        self.scp = StoreSCP(self.config, self.sessions, self.ingestor)
        self.scp.start(reuse_port=self.receivers.shared)
        self.receivers.start()
        if self.http_enabled:
            self._start_http()
        if self.scheduler:
            self.scheduler.start()

    def _start_http(self) -> None:
        import uvicorn

        from dicom_node.http.app import create_app

        app = create_app(self.config, self.sessions, self.ingestor)
        kwargs: dict[str, Any] = {}
        if self.config.tls_cert:
            kwargs = {"ssl_certfile": str(self.config.tls_cert),
                      "ssl_keyfile": str(self.config.tls_key)}
            if self.config.tls_ca:
                kwargs["ssl_ca_certs"] = str(self.config.tls_ca)
        server = uvicorn.Server(uvicorn.Config(
            app, host=self.config.http_host, port=self.config.http_port, log_level="warning",
            access_log=False, **kwargs))
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._http_server = server
        self._http_thread = threading.Thread(target=server.run, name="http", daemon=True)
        self._http_thread.start()

    def stop(self) -> None:
        if self.scheduler:
            self.scheduler.stop()
        if self._http_server is not None:
            self._http_server.should_exit = True
            if self._http_thread:
                self._http_thread.join(timeout=10)
        if self.scp is not None:
            self.scp.stop()
        if self.receivers is not None:
            self.receivers.stop()
        self.indexer.stop()
        if self._publisher is not None:
            self._publisher.close()
        self.engine.dispose()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML settings file (else LUMBAR_NODE_* variables)")
    parser.add_argument("--no-http", action="store_true", help="run the DICOM SCP only")
    parser.add_argument("--upgrade-db", action="store_true",
                        help="apply database migrations before starting")
    parser.add_argument("--loglevel", default="INFO")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dicom_node.config import load_config
    from dicom_node.ingest import quiet_value_checks

    quiet_value_checks()
    logging.basicConfig(level=args.loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pynetdicom logs every request at INFO; the node audits them itself
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLogger().level))
    config = load_config(toml_path=Path(args.config) if args.config else None)
    if args.upgrade_db:
        from dicom_node.db import migrate

        migrate.upgrade(config.db_url)
    node = Node(config, http=not args.no_http)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    node.start()
    log.info("node %s up: DICOM %s:%s, HTTP %s", config.ae_title, config.dimse_host,
             config.dimse_port, f"{config.http_host}:{config.http_port}" if not args.no_http
             else "off")
    done.wait()
    log.info("shutting down")
    node.stop()
    return 0
