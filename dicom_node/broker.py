"""Celery settings shared by the publishing node and the workers.

The embedded default is kombu's filesystem transport under DATA_DIR: no server, works
across processes on one machine. Production uses Redis.

Redis `visibility_timeout`: with `acks_late` a message stays unacknowledged while its task
runs, and Redis hands it to another worker once the visibility timeout passes. It is set to
twice the longest task time limit (plus a margin) so a study still being analysed is never
started a second time; a worker that dies mid-task has its message redelivered after that
timeout, and the reconciler re-queues the job sooner from the database if needed.
"""

from __future__ import annotations

from typing import Any

from dicom_node.config import DELIVERY_TIME_LIMIT_S as DELIVERY_TIME_LIMIT_S  # re-exported
from dicom_node.config import NodeConfig
from dicom_node.tasks import QUEUE_OF


def visibility_timeout(config: NodeConfig) -> int:
    return 2 * max(config.job_time_limit_seconds, DELIVERY_TIME_LIMIT_S) + 300


def celery_settings(config: NodeConfig) -> dict[str, Any]:
    broker = config.broker
    transport_options: dict[str, Any] = {}
    if broker.startswith("filesystem"):
        folder = config.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options = {
            # broadcast (pidbox) exchanges; kombu's default is ./control in the cwd
            "control_folder": str(folder / "control"),
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
        }
    elif broker.startswith(("redis", "rediss")):
        transport_options = {
            "visibility_timeout": visibility_timeout(config),
            "socket_connect_timeout": 3,
            "socket_timeout": 10,
            # fail a publish fast when Redis is down: the outbox keeps the message
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        }
        if config.broker_key_prefix:
            transport_options["global_keyprefix"] = config.broker_key_prefix
    backend = config.result_backend or (broker if broker.startswith("redis") else None)
    settings: dict[str, Any] = {
        "broker_url": broker,
        "broker_transport_options": transport_options,
        "broker_connection_timeout": 3,
        "broker_connection_retry_on_startup": True,
        "result_backend": backend,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "io",
        "task_routes": {name: {"queue": queue} for name, queue in QUEUE_OF.items()},
        "task_publish_retry_policy": {
            "max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1,
        },
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
    }
    if backend and backend.startswith("redis") and config.broker_key_prefix:
        settings["result_backend_transport_options"] = {
            "global_keyprefix": config.broker_key_prefix}
    return settings


class Publisher:
    """Sends tasks by name, so the node needs no worker code and no torch."""

    def __init__(self, config: NodeConfig) -> None:
        from celery import Celery

        self.app = Celery("lumbar-node-publisher", set_as_current=False)
        settings = celery_settings(config)
        # results are read from the database, never waited on here; without a backend a
        # publish does not subscribe to (or stall on) the result store
        settings["result_backend"] = None
        self.app.conf.update(settings)

    def __call__(self, task_name: str, queue: str, payload: dict[str, Any]) -> None:
        self.app.send_task(task_name, kwargs=payload, queue=queue, retry=True)

    def close(self) -> None:
        self.app.close()
