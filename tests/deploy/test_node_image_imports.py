"""What the node image runs must import without torch, monai, highdicom or models/.

The node image leaves them out (deploy/docker/node.Dockerfile); this runs the node image's
commands' modules in a Python where importing them fails, as it would in the container.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from deploy_files import REPO

from workers.cli import COMMANDS

ABSENT_IN_NODE_IMAGE = ("torch", "monai", "highdicom", "models", "torchvision", "scipy")
#: commands the node image runs (serve, db upgrade, the io worker) or offers to operators
NODE_IMAGE_COMMANDS = ("serve", "db", "audit", "resend", "worker")

_PROBE = """
import argparse, importlib, importlib.abc, pkgutil, sys
ABSENT = set(sys.argv[1].split(","))
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the node image)")
        return None
sys.meta_path.insert(0, Absent())
for name in sys.argv[2:]:
    if name.endswith(".*"):
        package = importlib.import_module(name[:-2])
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)
        continue
    module = importlib.import_module(name)
    if hasattr(module, "configure"):
        module.configure(argparse.ArgumentParser())
print("ok")
"""


def run_probe(*modules: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(ABSENT_IN_NODE_IMAGE), *modules],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )


def test_probe_really_hides_the_imaging_stack() -> None:
    done = run_probe("torch")
    assert done.returncode != 0 and "not in the node image" in done.stderr


def test_node_packages_import_without_the_imaging_stack() -> None:
    done = run_probe("lumbar_common.*", "dicom_node.*", "migrations")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", NODE_IMAGE_COMMANDS)
def test_node_image_command_loads_without_the_imaging_stack(command: str) -> None:
    module = COMMANDS[command][0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")
    done = run_probe(module)
    assert done.returncode == 0, done.stderr


def test_io_worker_app_builds_without_the_imaging_stack(tmp_path) -> None:
    """`lumbar-node worker --queues io` runs from the node image: its Celery app must build."""
    code = _PROBE.replace('print("ok")', "") + (
        "from dicom_node.config import load_config\n"
        "from dicom_node.tasks import DELIVER_RESULTS, PROCESS_STUDY\n"
        "from workers.celery_app import create_app\n"
        "app = create_app(load_config(), preload_models=False)\n"
        "assert DELIVER_RESULTS in app.tasks and PROCESS_STUDY in app.tasks\n"
        "print('ok')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "LUMBAR_NODE_DATA_DIR": str(tmp_path),
           "LUMBAR_NODE_BROKER_URL": "redis://127.0.0.1:6379/0"}
    done = subprocess.run(
        [sys.executable, "-c", code, ",".join(ABSENT_IN_NODE_IMAGE), "workers.worker_cli"],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
