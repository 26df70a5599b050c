"""Synthetic studies from the project's generator, routed by the shipped Orthanc setup.

The generator writes studies the way a scanner would (series, body part, descriptions), so
this is the closest stand-in for a hospital's lumbar MR and for a study that must not go to
the node (the `non_lumbar` variant: a brain MR).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pydicom
import pytest
from _harness import wait_for
from dcmtk_peers import StoreSCP, sop_uids
from orthanc import OrthancServer

pytestmark = pytest.mark.slow

if importlib.util.find_spec("models.synth") is None:
    pytest.skip("models.synth is not available", allow_module_level=True)


def synthetic(out: Path, seed: int, variants: tuple[str, ...] = ()) -> tuple[dict, list[Path]]:
    from models.synth import generate_study

    truth: dict[str, Any] = generate_study(out, seed, variants=variants)
    corrupt = set(truth.get("corrupt_files", []))
    files = [out / f for s in truth["series"].values() for f in s["files"] if f not in corrupt]
    return truth, files


def test_synthetic_lumbar_study_reaches_the_node_complete(
    pacs: OrthancServer, node_scp: StoreSCP, tmp_path: Path
) -> None:
    truth, files = synthetic(tmp_path / "lumbar", seed=11)
    assert pydicom.dcmread(files[0], stop_before_pixels=True).BodyPartExamined == "LSPINE"
    pacs.upload(files)
    expected = sop_uids(files)
    wait_for(lambda: expected <= node_scp.received_uids(), 60,
             f"all {len(expected)} synthetic instances at the node")
    pacs.wait_routed(truth["study_instance_uid"], f"({len(truth['series'])} series) sent")


def test_synthetic_brain_study_is_not_routed(
    pacs: OrthancServer, node_scp: StoreSCP, tmp_path: Path
) -> None:
    truth, files = synthetic(tmp_path / "brain", seed=12, variants=("non_lumbar",))
    pacs.upload(files)
    pacs.wait_routed(truth["study_instance_uid"], "is not a lumbar spine MR, skipped")
    assert not sop_uids(files) & node_scp.received_uids()
