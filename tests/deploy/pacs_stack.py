"""A real Orthanc and a real node wired to each other both ways, as docker compose wires them.

Orthanc runs the shipped orthanc.json and autoroute.lua with the node's SCP as its
`lumbarnode` modality; the node runs as `lumbar-node serve` and `lumbar-node worker`
processes on a throwaway PostgreSQL database and a private redis-server, accepts Orthanc's
AE title only, and delivers its results to Orthanc's DICOM port. The AE titles on both sides
come from the shipped Orthanc configuration, so a mismatch there fails here.

Only loopback ports, storage folders and short timers differ from a site.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _harness
from orthanc import NODE_MODALITY, Modality, OrthancServer, load_deploy_config


@dataclass
class PacsLoop:
    """The running pair: Orthanc as the site's PACS, and the node's processes."""

    pacs: OrthancServer
    stack: _harness.Stack

    @property
    def destination_label(self) -> str:
        """How the node names Orthanc in its delivery rows and audit events."""
        (destination,) = self.stack.config.destinations
        return str(destination.label)

    def logs(self) -> str:
        """Everything the processes said, for a failure message."""
        return f"--- orthanc\n{self.pacs.tail(80)}\n--- node\n{self.stack.logs()[-20000:]}"


@contextlib.contextmanager
def pacs_loop(workdir: Path, *, stable_age: int = 1, **node_settings: Any) -> Iterator[PacsLoop]:
    """Start Orthanc, then the node and one worker; stop all of them on exit.

    The node's DICOM port is chosen first because Orthanc's configuration names it, and
    Orthanc's port is known before the node starts because the node's destinations name it.
    """
    shipped = load_deploy_config()
    node_aet = str(shipped["DicomModalities"][NODE_MODALITY]["AET"])
    pacs_aet = str(shipped["DicomAet"])
    node_port = _harness.free_port()
    with contextlib.ExitStack() as stop:
        pacs = OrthancServer(workdir / "orthanc", destination=Modality(
            node_aet, "127.0.0.1", node_port), aet=pacs_aet, stable_age=stable_age)
        stop.enter_context(pacs)
        database_url = stop.enter_context(_harness.throwaway_database())
        redis = _harness.RedisServer(workdir / "redis").start()
        stop.callback(redis.stop)
        node_settings.setdefault("settle_seconds", 1.0)
        stack = _harness.Stack(
            workdir / "node", database_url, redis.url, workers=1, pacs=False,
            ae_title=node_aet, dimse_port=node_port, allowed_callers=pacs_aet,
            destinations=f"{pacs_aet}@127.0.0.1:{pacs.dicom_port}", **node_settings)
        stop.enter_context(stack)
        loop = PacsLoop(pacs, stack)
        try:
            yield loop
        except Exception as failure:  # what the processes said is the first thing to read
            failure.add_note(loop.logs())
            raise


def aware(moment: datetime | None) -> datetime | None:
    """SQLAlchemy may hand back naive datetimes; the node stores UTC."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def qido_instances(pacs: OrthancServer, study_instance_uid: str) -> list[dict[str, Any]]:
    """QIDO-RS search for every instance of a study."""
    response = pacs.client.get(f"/dicom-web/studies/{study_instance_uid}/instances",
                               headers={"Accept": "application/dicom+json"})
    response.raise_for_status()
    return response.json() if response.content else []


def store_jobs(pacs: OrthancServer) -> list[dict[str, Any]]:
    """Orthanc's C-STORE jobs to other modalities (the routing script starts one per study)."""
    jobs = [pacs.get_json(f"/jobs/{job_id}") for job_id in pacs.get_json("/jobs")]
    return [job for job in jobs if job.get("Type") == "DicomModalityStore"]


def tag(dataset: dict[str, Any], key: str) -> Any:
    """First value of a DICOM JSON attribute, or None."""
    values = dataset.get(key, {}).get("Value") or [None]
    return values[0]
