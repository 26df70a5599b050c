"""Small real DICOM studies and dcmtk peers for the node tests.

The images come from the benchmarks' builder (`load.write_series`) and the processes and
polling from `_harness` (benchmarks/ is on sys.path, see tests/conftest.py), so a node test
sends the same kind of study to the same kind of PACS as a benchmark; what is here is only
what the node tests want differently: tiny series, a verbose storescu, a stock storescp.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import _harness
from load import UID_ROOT, write_series
from pydicom.uid import generate_uid

from dicom_node.config import NodeConfig, load_config
from dicom_node.db import migrate


def loopback_config(data_dir: Path, api_token: str, **changes: object) -> NodeConfig:
    """A node on free loopback ports that accepts AE ``PACS`` and the bearer ``api_token``,
    its database migrated; ``changes`` are further settings."""
    config = load_config(
        env={}, data_dir=data_dir, allowed_callers="PACS", dimse_host="127.0.0.1",
        dimse_port=_harness.free_port(), http_host="127.0.0.1", http_port=_harness.free_port(),
        api_token=api_token, **changes)
    migrate.upgrade(config.db_url)
    return config


def segmentation_model_missing() -> str | None:
    """Why the whole-pipeline tests cannot run (no registered segmentation model), or None."""
    try:
        from models.registry import load_card

        load_card("segmentation")
    except (KeyError, FileNotFoundError, ValueError) as exc:
        return f"no registered segmentation model: {exc}"
    return None


def wait_port(port: int, timeout: float = 15.0) -> None:
    _harness.wait_for(lambda: _harness.port_open(port), timeout,
                      f"something listening on port {port}", interval=0.05)


def write_study(
    out: Path, roles: tuple[str, ...] = ("sag_t2", "sag_t1", "ax_t2"), n: int = 6,
    study_uid: str | None = None, **overrides: object,
) -> tuple[str, list[Path]]:
    """A tiny lumbar MR study on disk; returns its StudyInstanceUID and files. ``overrides``
    go to every `load.mr_instance` (``body_part="BRAIN"`` makes a study the node must ignore)."""
    study_uid = study_uid or generate_uid(UID_ROOT)
    files: list[Path] = []
    for role in roles:
        files += write_series(out, study_uid, role, n,
                              description=role.upper().replace("_", " "), **overrides)
    return study_uid, files


def storescu(port: int, files: Sequence[Path], calling: str = "PACS",
             called: str = "LUMBARNODE", *extra: str) -> subprocess.CompletedProcess[str]:
    """Verbose, so a test can count the store responses in stderr."""
    return _harness.storescu(port, files, calling=calling, called=called,
                             extra=["-v", *extra], timeout=120)


class Storescp(_harness.Storescp):
    """storescp as a PACS ships it, started at once: it refuses RLE (a delivery test relies
    on that) and names files by SOP instance, so an instance sent again overwrites its file."""

    def __init__(self, workdir: Path, port: int, ae_title: str = "PACS") -> None:
        super().__init__(workdir, ae_title=ae_title, port=port, unique_filenames=False,
                         accept_all=False)
        self.start()
