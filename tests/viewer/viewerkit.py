"""A running node holding analysed synthetic studies, for the browser tests of the viewer.

The studies are made the way the product makes them: the synthetic generator writes the
images, ``lumbar-node analyze`` runs the pipeline and writes the SR, SEG, key image and KOS,
and the node's own ingestor stores sources and results (results with ``source="result"``,
as the worker does), so OHIF reads exactly what a radiologist's viewer would.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))
from nodekit import loopback_config, wait_port

from dicom_node.config import NodeConfig
from dicom_node.serve import Node

ROOT = Path(__file__).resolve().parents[2]
OHIF_VERSION = "3.13.2"
OHIF_DIR = ROOT / ".cache" / "ohif" / OHIF_VERSION
TOKEN = "viewer-test-token"


@dataclass
class Analysed:
    """One synthetic study after analysis: its UIDs, patient and result files."""

    study_uid: str
    patient_id: str
    sources: list[Path]
    results: dict[str, Path]
    findings: dict


def analyse(synth_dir: Path, out: Path) -> Analysed:
    """Runs ``lumbar-node analyze`` on a synthetic study folder (the CLI, as a user would)."""
    truth = json.loads((synth_dir / "truth.json").read_text())
    if not (out / "findings.json").is_file():
        subprocess.run([sys.executable, "-m", "workers.cli", "analyze", str(synth_dir / "dicom"),
                        "--out", str(out)], check=True, cwd=ROOT, capture_output=True,
                       timeout=900)
    results = {p.stem: p for p in out.glob("*.dcm")}
    return Analysed(truth["study_instance_uid"], truth["patient"]["id"],
                    sorted((synth_dir / "dicom").rglob("*.dcm")), results,
                    json.loads((out / "findings.json").read_text()))


def config_for(data_dir: Path, **changes: object) -> NodeConfig:
    changes.setdefault("viewer_dir", str(OHIF_DIR))
    return loopback_config(data_dir, TOKEN, **changes)


@contextlib.contextmanager
def running_node(config: NodeConfig, studies: list[Analysed]) -> Iterator[Node]:
    """The node (DICOM and HTTP, no scheduler: nothing is analysed again) with every source
    and result of ``studies`` stored."""
    node = Node(config, scheduler=False)
    node.start()
    try:
        wait_port(config.http_port)
        for study in studies:
            for path in study.sources:
                node.ingestor.store(path.read_bytes(), source="stow", ip="127.0.0.1")
            for path in study.results.values():
                node.ingestor.store(path.read_bytes(), source="result")
        yield node
    finally:
        node.stop()
