"""Fixtures for the deployment tests: a real Orthanc PACS and a storescp standing in for the node.

One PACS per test module keeps the suite fast (Orthanc starts in about a second, but each
routing test waits StableAge seconds); tests use separate studies so they do not interfere.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dcmtk_peers import StoreSCP
from orthanc import OrthancServer, orthanc_binary


@pytest.fixture(scope="module")
def node_scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreSCP]:
    if shutil.which("storescp") is None:
        pytest.skip("dcmtk storescp is not installed")
    with StoreSCP(tmp_path_factory.mktemp("node-scp"), aet="LUMBARNODE").start() as scp:
        yield scp


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, node_scp: StoreSCP) -> Iterator[OrthancServer]:
    if orthanc_binary() is None:
        pytest.skip("Orthanc is not installed")
    with OrthancServer(
        tmp_path_factory.mktemp("pacs"), destination=node_scp.modality, stable_age=1
    ) as server:
        yield server
