"""docker-compose.yml: services, images, ports and settings agree with the node's own code."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from deploy_files import COMPOSE_FILE, DEPLOY, REPO, interpolate, load_compose, read_env_file

from dicom_node.config import ENV_PREFIX, NodeConfig, load_config

ENV_EXAMPLE = read_env_file(DEPLOY / "env.example")


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose(ENV_EXAMPLE)


def node_env(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in service["environment"].items()}


def test_required_secrets_must_be_set() -> None:
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        load_compose({})


def test_interpolation_defaults_and_dollar_escape() -> None:
    assert interpolate("${A:-x} ${B-y} $$HOSTNAME", {"A": "", "B": ""}) == "x  $HOSTNAME"


def test_services_present(compose: dict) -> None:
    assert set(compose["services"]) == {
        "postgres", "redis", "migrate", "node", "worker-gpu", "worker-io", "orthanc", "proxy",
    }


def test_built_images_reference_existing_dockerfiles(compose: dict) -> None:
    built = {name: s["build"] for name, s in compose["services"].items() if "build" in s}
    assert set(built) >= {"node", "worker-gpu", "worker-io", "migrate"}
    for name, build in built.items():
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert context == REPO, f"{name}: build context must be the repository root"
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        assert dockerfile.with_name(dockerfile.name + ".dockerignore").is_file()


def test_node_ports_match_node_defaults(compose: dict) -> None:
    defaults = NodeConfig()
    published = {str(p).split(":")[-1] for p in compose["services"]["node"]["ports"]}
    assert published == {str(defaults.dimse_port), str(defaults.http_port)}
    config = load_config(env=node_env(compose["services"]["node"]))
    assert (config.dimse_port, config.http_port) == (defaults.dimse_port, defaults.http_port)


@pytest.mark.parametrize("service", ["node", "migrate", "worker-gpu", "worker-io"])
def test_environment_is_accepted_by_node_config(compose: dict, service: str) -> None:
    """load_config rejects unknown LUMBAR_NODE_* names and bad values: it is the referee."""
    env = node_env(compose["services"][service])
    config = load_config(env=env)
    assert config.database_url.startswith("postgresql+psycopg://lumbar:")
    assert config.database_url.endswith("@postgres:5432/lumbar")
    assert config.broker_url == "redis://redis:6379/0"
    assert config.ae_title == ENV_EXAMPLE["NODE_AE_TITLE"]
    assert config.api_token == ENV_EXAMPLE["LUMBAR_NODE_API_TOKEN"]
    assert [c.ae_title for c in config.allowed_callers] == ["ORTHANC"]
    assert [d.label for d in config.destinations] == ["ORTHANC@orthanc:4242"]
    assert str(config.spool) == "/var/lib/lumbar-node/spool"


def test_compose_env_agrees_with_orthanc(compose: dict) -> None:
    orthanc = json.loads((DEPLOY / "orthanc" / "orthanc.json").read_text())
    config = load_config(env=node_env(compose["services"]["node"]))
    (destination,) = config.destinations
    assert (destination.ae_title, destination.port) == (orthanc["DicomAet"], orthanc["DicomPort"])
    assert destination.host in compose["services"]
    assert config.allowed_callers[0].matches(orthanc["DicomAet"], None)
    node_modality = orthanc["DicomModalities"][orthanc["LumbarNode"]["Modality"]]
    assert node_modality["AET"] == config.ae_title
    assert node_modality["Host"] in compose["services"]
    assert node_modality["Port"] == config.dimse_port


def test_orthanc_mounts_the_shipped_config(compose: dict) -> None:
    orthanc = json.loads((DEPLOY / "orthanc" / "orthanc.json").read_text())
    volumes = compose["services"]["orthanc"]["volumes"]
    assert "./orthanc:/etc/orthanc:ro" in volumes
    # jodogne/orthanc-plugins keeps its plugins (DICOMweb among them) here; Debian's package
    # in /usr/share/orthanc/plugins. Orthanc logs and skips a plugin folder that is missing.
    assert compose["services"]["orthanc"]["image"].startswith("jodogne/orthanc-plugins:")
    assert "/usr/local/share/orthanc/plugins" in orthanc["Plugins"]
    (script,) = orthanc["LuaScripts"]
    assert script.startswith("/etc/orthanc/")
    assert (DEPLOY / "orthanc" / script.removeprefix("/etc/orthanc/")).is_file()


def test_gpu_worker_reserves_an_nvidia_gpu(compose: dict) -> None:
    devices = compose["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    for name in ("node", "worker-io", "migrate"):
        assert "deploy" not in compose["services"][name]


def test_workers_and_node_share_the_data_volume(compose: dict) -> None:
    for name in ("node", "worker-gpu", "worker-io"):
        assert "node-data:/var/lib/lumbar-node" in compose["services"][name]["volumes"]


def test_redis_is_durable_and_never_evicts(compose: dict) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"


def test_every_node_variable_names_a_node_setting(compose: dict) -> None:
    """The node ignores LUMBAR_NODE_* names it does not know: a typo would go unnoticed."""
    fields = {f.name for f in dataclasses.fields(NodeConfig)}
    for name, service in compose["services"].items():
        for key in service.get("environment") or {}:
            if key.startswith(ENV_PREFIX):
                assert key[len(ENV_PREFIX):].lower() in fields, f"{name}: {key}"


def test_broker_visibility_timeout_outlasts_a_job(compose: dict) -> None:
    from dicom_node.broker import celery_settings

    config = load_config(env=node_env(compose["services"]["worker-gpu"]))
    options = celery_settings(config)["broker_transport_options"]
    assert options["visibility_timeout"] > config.job_time_limit_seconds == 1800


def test_readme_names_only_real_settings() -> None:
    """Every LUMBAR_NODE_* the deployment guide tells hospital IT to set exists in the node."""
    fields = {f.name for f in dataclasses.fields(NodeConfig)}
    readme = (DEPLOY / "README.md").read_text()
    names = set(re.findall(r"LUMBAR_NODE_([A-Z_]+[A-Z])", readme))
    # `_SPOOL_DIR`-style shorthands in the table continue the name before them
    names |= {n for n in re.findall(r"`_([A-Z_]+[A-Z])`", readme)}
    assert names, "the guide names no settings"
    unknown = {n for n in names if n.lower() not in fields} - {"REGISTRY", "VERSION"}
    assert not unknown, f"README names settings the node does not have: {sorted(unknown)}"
