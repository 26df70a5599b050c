"""Dockerfiles and the node's requirements: no torch in the node image, the right parts copied."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deploy_files import DEPLOY, REPO, dockerfile_instructions

NODE_DOCKERFILE = DEPLOY / "docker" / "node.Dockerfile"
WORKER_DOCKERFILE = DEPLOY / "docker" / "worker.Dockerfile"
REQUIREMENTS = DEPLOY / "requirements-node.txt"
HEAVY = {"torch", "monai", "highdicom", "torchvision"}
#: packages whose code the node image runs in full, including imports inside functions
NODE_PACKAGES = ("dicom_node", "lumbar_common", "migrations")


def requirement_names(path: Path) -> dict[str, str]:
    names = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names[re.split(r"[\[=<>~! ]", line, maxsplit=1)[0].lower().replace("_", "-")] = line
    return names


def pyproject_dependency_names() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {re.split(r"[\[=<>~! ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}


def installed_closure(names: set[str]) -> set[str]:
    """The distributions pip installs for `names`: them and their requirements, recursively
    (extras only where requested, e.g. celery[redis]), as read from the installed metadata."""
    from packaging.requirements import Requirement

    wanted = [Requirement(line) for line in requirement_names(REQUIREMENTS).values()
              if line.split("[")[0].split("=")[0].lower().replace("_", "-") in names]
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            child = Requirement(text)
            extras = requirement.extras or {""}
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras):
                wanted.append(child)
    return seen


def imported_top_level(package: str) -> set[str]:
    found = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_node_requirements_have_no_imaging_stack() -> None:
    names = requirement_names(REQUIREMENTS)
    assert not HEAVY & set(names)
    assert not HEAVY & installed_closure(set(names)), "a node dependency pulls in torch"
    assert all("==" in spec for spec in names.values()), "pin every node dependency"


def test_node_requirements_are_project_dependencies() -> None:
    assert set(requirement_names(REQUIREMENTS)) <= pyproject_dependency_names()


def test_node_requirements_cover_every_node_import() -> None:
    """Everything dicom_node/, lumbar_common/ and migrations/ import is installed in the image."""
    provided = installed_closure(set(requirement_names(REQUIREMENTS)))
    local = {"dicom_node", "lumbar_common", "migrations", "workers"}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for package in NODE_PACKAGES:
        for module in imported_top_level(package) - local - set(sys.stdlib_module_names):
            dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
            if not dists & provided:
                missing[module] = sorted(dists)
    assert not missing, f"node image lacks {missing}"
    assert not HEAVY & set().union(*(imported_top_level(p) for p in NODE_PACKAGES))


def test_node_image_installs_project_without_dependencies() -> None:
    runs = [args for op, args in dockerfile_instructions(NODE_DOCKERFILE) if op == "RUN"]
    assert any("pip install -r requirements-node.txt" in r for r in runs)
    assert any("pip install --no-deps ." in r for r in runs)
    assert not any(re.search(r"\b(torch|monai)\b", r.split("sys.exit")[0]) for r in runs)
    copied = [args for op, args in dockerfile_instructions(NODE_DOCKERFILE) if op == "COPY"]
    assert not any(c.startswith("models") for c in copied), "node image must not carry models/"


@pytest.mark.parametrize("dockerfile", [NODE_DOCKERFILE, WORKER_DOCKERFILE])
def test_dockerfile_basics(dockerfile: Path) -> None:
    instructions = dockerfile_instructions(dockerfile)
    ops = [op for op, _ in instructions]
    user = [args for op, args in instructions if op == "USER"]
    assert user and not user[-1].startswith(("0", "root")), "run as a non-root user"
    assert "HEALTHCHECK" in ops and ops[-1] == "CMD" and "ENTRYPOINT" in ops
    entry = [args for op, args in instructions if op == "ENTRYPOINT"][-1]
    assert entry == '["lumbar-node"]'
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text().splitlines()
    for op, args in instructions:
        if op != "COPY" or args.startswith("--from"):
            continue
        *sources, _ = args.split()
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
            assert any(
                p == f"!{source}" or (p.endswith("/**") and source.startswith(p[1:-3]))
                for p in ignore if p.startswith("!")
            ), f"{source} is excluded by the dockerignore of {dockerfile.name}"


def test_image_commands_are_lumbar_node_commands() -> None:
    from workers.cli import COMMANDS

    for dockerfile, expected in ((NODE_DOCKERFILE, "serve"), (WORKER_DOCKERFILE, "worker")):
        cmd = [args for op, args in dockerfile_instructions(dockerfile) if op == "CMD"][-1]
        assert ast.literal_eval(cmd)[0] == expected and expected in COMMANDS


def test_worker_image_is_cuda_with_torch_and_weights() -> None:
    instructions = dockerfile_instructions(WORKER_DOCKERFILE)
    args = dict(a.split("=", 1) for op, a in instructions if op == "ARG" and "=" in a)
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "runtime" in args["CUDA_IMAGE"]
    cuda = re.search(r":(\d+)\.(\d+)", args["CUDA_IMAGE"])
    assert cuda and args["TORCH_INDEX_URL"].endswith(f"/cu{cuda.group(1)}{cuda.group(2)}")
    runs = " ".join(a for op, a in instructions if op == "RUN")
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in runs
    assert "python3.11 -m venv" in runs and "python verify_weights.py" in runs
    copied = [a for op, a in instructions if op == "COPY"]
    assert "models ./models" in copied


def _run_verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEPLOY / "docker" / "verify_weights.py"), str(root)],
        capture_output=True, text=True, check=False, cwd=REPO,
    )


def test_verify_weights_accepts_matching_and_refuses_missing_or_tampered(tmp_path: Path) -> None:
    from models.registry import write_card

    empty = _run_verify(tmp_path)
    assert empty.returncode == 1 and "no model cards" in empty.stderr
    (tmp_path / "tiny.pt").write_bytes(b"\x00weights\x01" * 10)
    write_card({
        "name": "tiny", "version": "1.0.0", "task": "segmentation", "architecture": {},
        "weights": "tiny.pt", "training_data": {}, "split": {}, "metrics": {},
        "command": "n/a", "created": "2026-01-01T00:00:00Z",
    }, tmp_path)
    ok = _run_verify(tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok   tiny 1.0.0 tiny.pt")
    (tmp_path / "tiny.pt").write_bytes(b"tampered")
    bad = _run_verify(tmp_path)
    assert bad.returncode == 1 and "sha256" in bad.stderr


def test_repository_weights_pass_the_image_build_check() -> None:
    """The worker image build runs verify_weights.py; catch a card/weights mismatch in CI."""
    folder = REPO / "models" / "weights"
    if not any(folder.glob("*.json")):
        pytest.skip("no model cards in models/weights yet")
    done = _run_verify(folder)
    assert done.returncode == 0, done.stderr
