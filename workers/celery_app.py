"""Celery application factory and the task bodies.

Nothing connects at import time: `create_app` builds the app from NodeConfig, and each
worker process opens its database engine and loads the segmentation model on first use
(or in `worker_process_init`), never in the parent before a fork.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.broker import DELIVERY_TIME_LIMIT_S, celery_settings
from dicom_node.config import NodeConfig, load_config
from dicom_node.db.session import make_engine, make_sessionmaker
from dicom_node.tasks import (
    CORRECTED_REPORT,
    DELIVER_RESULTS,
    PROCESS_STUDY,
    RECONCILE,
    RELAY_OUTBOX,
)

log = logging.getLogger(__name__)
RELAY_EVERY_S = 5.0
RECONCILE_EVERY_S = 30.0


@dataclass
class Runtime:
    """Per-process state: opened lazily, after any fork."""

    config: NodeConfig
    device: str = "auto"
    _sessions: sessionmaker[Session] | None = None
    _segmenter: Any = None
    _segmenter_tried: bool = False
    hostname: str = field(default_factory=socket.gethostname)

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            self._sessions = make_sessionmaker(make_engine(self.config.db_url))
        return self._sessions

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def segmenter(self) -> Any:
        """The segmentation model, loaded once per worker process."""
        if not self._segmenter_tried:
            self._segmenter_tried = True
            from models.pipeline import load_segmenter

            try:
                self._segmenter = load_segmenter(device=self.resolved_device())
            except Exception as exc:  # the job itself reports the fault with its reason
                log.warning("segmentation model not preloaded (%s: %s); each job will try",
                            type(exc).__name__, exc)
                self._segmenter_tried = False
        return self._segmenter

    def analyze(self, files: list[Path], out_dir: Path) -> dict[str, Any]:
        from models.pipeline import analyze_study

        return analyze_study(files, out_dir, device=self.resolved_device(),
                             segmenter=self.segmenter())


def create_app(config: NodeConfig | None = None, device: str = "auto",
               preload_models: bool = True) -> Celery:
    config = config or load_config()
    app = Celery("lumbar-node", set_as_current=False)
    app.conf.update(celery_settings(config))
    app.conf.beat_schedule = {
        "relay-outbox": {"task": RELAY_OUTBOX, "schedule": RELAY_EVERY_S},
        "reconcile": {"task": RECONCILE, "schedule": RECONCILE_EVERY_S},
    }
    runtime = Runtime(config, device)
    app.lumbar_runtime = runtime  # type: ignore[attr-defined]
    _register(app, runtime)
    if preload_models:
        worker_process_init.connect(lambda **_: runtime.segmenter(), weak=False)
    return app


def _register(app: Celery, runtime: Runtime) -> None:
    config = runtime.config

    @app.task(name=PROCESS_STUDY, bind=True, acks_late=True, reject_on_worker_lost=True,
              time_limit=config.job_time_limit_seconds,
              soft_time_limit=max(1, config.job_time_limit_seconds - 30),
              max_retries=3)
    def process_study(self: Task, job_id: int) -> str:
        from workers.processing import JobRetry, run_job

        try:
            return run_job(runtime.sessions, config, job_id, runtime.analyze,
                           worker_name=f"{runtime.hostname}:{self.request.id}")
        except JobRetry as exc:
            raise self.retry(exc=exc, countdown=config.job_retry_delay_seconds
                             * 2 ** self.request.retries) from exc

    @app.task(name=DELIVER_RESULTS, acks_late=True, reject_on_worker_lost=True,
              time_limit=DELIVERY_TIME_LIMIT_S, soft_time_limit=DELIVERY_TIME_LIMIT_S - 10)
    def deliver_results(delivery_id: int) -> str:
        from dicom_node.delivery.service import deliver

        return deliver(runtime.sessions, config, delivery_id)

    @app.task(name=CORRECTED_REPORT, acks_late=True, reject_on_worker_lost=True,
              time_limit=300, soft_time_limit=270)
    def corrected_report(report_version_id: int) -> str:
        from workers.corrected_report import build_corrected_report

        return build_corrected_report(runtime.sessions, config, report_version_id,
                                      worker_name=runtime.hostname)

    @app.task(name=RELAY_OUTBOX, time_limit=60, ignore_result=True)
    def relay_outbox() -> int:
        from dicom_node.outbox import relay

        def publish(name: str, queue: str, payload: dict[str, Any]) -> None:
            app.send_task(name, kwargs=payload, queue=queue)

        return relay(runtime.sessions, publish)

    @app.task(name=RECONCILE, time_limit=60, ignore_result=True)
    def reconcile_task() -> dict[str, int]:
        from dicom_node.reconcile import reconcile

        return reconcile(runtime.sessions, config)


def __getattr__(name: str) -> Celery:
    """`celery --app workers.celery_app …` (health probes) gets an app built on first use."""
    if name == "app":
        globals()["app"] = built = create_app(preload_models=False)
        return built
    raise AttributeError(name)
