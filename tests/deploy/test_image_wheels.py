"""What `pip install .` puts into each image, built from exactly the sources the image copies.

The Dockerfiles COPY a subset of the repository and install it; a wheel built here from that
same subset (offline, with the venv's setuptools) shows what the image will hold: the worker's
model weights and cards as package data, the node's migrations, and no models/ in the node.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from deploy_files import DEPLOY, REPO, dockerfile_instructions

IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def copied_sources(dockerfile: Path) -> list[str]:
    """Repository paths the Dockerfile copies into its install folder."""
    sources = []
    for op, args in dockerfile_instructions(dockerfile):
        if op == "COPY" and not args.startswith("--from"):
            *srcs, _ = args.split()
            sources += [s for s in srcs if not s.startswith("deploy/")]
    return sources


def build_wheel(dockerfile: Path, work: Path, extra: dict[str, bytes] | None = None) -> set[str]:
    """Names in the wheel of the image's sources (+ extra files); built without network."""
    src = work / "src"
    src.mkdir(parents=True)
    for source in copied_sources(dockerfile):
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, src / source, ignore=IGNORED)
        else:
            shutil.copy2(path, src / source)
    for name, data in (extra or {}).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(work / "dist"), str(src)],
        capture_output=True, text=True, timeout=300, check=False, cwd=work,
    )
    if done.returncode != 0:
        pytest.fail(f"wheel build failed: {done.stderr[-2000:]}")
    (wheel,) = (work / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_worker_image_bakes_weights_and_cards_in(tmp_path: Path) -> None:
    names = build_wheel(DEPLOY / "docker" / "worker.Dockerfile", tmp_path, {
        "models/weights/segmentation.pt": b"\x00" * 64,
        "models/weights/segmentation.json": b"{}",
    })
    assert {"models/weights/segmentation.pt", "models/weights/segmentation.json"} <= names
    assert "models/pipeline.py" in names and "workers/celery_app.py" in names


def test_node_image_holds_migrations_and_no_models(tmp_path: Path) -> None:
    names = build_wheel(DEPLOY / "docker" / "node.Dockerfile", tmp_path)
    assert not any(n.startswith("models/") for n in names)
    assert {"migrations/env.py", "migrations/script.py.mako"} <= names
    versions = sorted(p.name for p in (REPO / "migrations" / "versions").glob("*.py"))
    assert versions and {f"migrations/versions/{v}" for v in versions} <= names
    assert {"dicom_node/serve.py", "workers/worker_cli.py", "workers/cli.py"} <= names
