"""Kubernetes manifests: they parse, reference each other correctly, and the node accepts them."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import pytest
import yaml
from deploy_files import K8S, k8s_documents, k8s_objects, read_env_file

from dicom_node.config import ENV_PREFIX, NodeConfig, load_config


def containers(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"]


def test_every_yaml_file_parses() -> None:
    files = sorted(K8S.glob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        assert [d for d in yaml.safe_load_all(path.read_text()) if d], f"{path} is empty"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    generated = {g["name"] for g in kustomization["secretGenerator"]}
    assert generated == {"lumbar-node-secrets"}
    images = {i["name"] for i in kustomization["images"]}
    used = {c["image"] for d in k8s_objects("Deployment").values() for c in containers(d)}
    used |= {c["image"] for j in k8s_objects("Job").values()
             for c in j["spec"]["template"]["spec"]["containers"]}
    assert {u for u in used if u.startswith("lumbar-node/")} == images


def test_configmap_and_secrets_are_valid_node_settings() -> None:
    data = k8s_objects("ConfigMap")["lumbar-node-config"]["data"]
    secrets = read_env_file(K8S / "secrets.env.example")
    fields = {f.name for f in dataclasses.fields(NodeConfig)}
    for key in {**data, **secrets}:
        assert key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX):].lower() in fields, key
    config = load_config(env={**data, **secrets})
    assert set(secrets) == {
        "LUMBAR_NODE_DATABASE_URL", "LUMBAR_NODE_BROKER_URL", "LUMBAR_NODE_RESULT_BACKEND",
        "LUMBAR_NODE_API_TOKEN", "LUMBAR_NODE_DESTINATION_TOKEN",
    }
    assert config.database_url.startswith("postgresql+psycopg://")
    assert config.destinations and config.allowed_callers
    redis = k8s_objects("Service")["lumbar-node-redis"]
    assert config.broker_url.startswith(f"redis://{redis['metadata']['name']}:6379/")


@pytest.mark.parametrize(
    "name", ["lumbar-node", "lumbar-node-worker-gpu", "lumbar-node-worker-io"]
)
def test_deployments_reference_existing_config_and_volumes(name: str) -> None:
    deployment = k8s_objects("Deployment")[name]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    sources = [s for c in spec["containers"] for s in c["envFrom"]]
    assert {"configMapRef": {"name": "lumbar-node-config"}} in sources
    assert {"secretRef": {"name": "lumbar-node-secrets"}} in sources
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == set(k8s_objects("PersistentVolumeClaim"))
    for container in spec["containers"]:
        assert container["resources"]["requests"] and container["resources"]["limits"]
        mounted = {m["name"] for m in container["volumeMounts"]}
        assert mounted <= {v["name"] for v in spec["volumes"]}


def test_spool_volume_is_shared_between_pods() -> None:
    (pvc,) = k8s_objects("PersistentVolumeClaim").values()
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_gpu_worker_requests_one_nvidia_gpu() -> None:
    (container,) = containers(k8s_objects("Deployment")["lumbar-node-worker-gpu"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["args"] == ["worker", "--queues", "gpu"]
    assert container["image"] == "lumbar-node/worker"
    (io,) = containers(k8s_objects("Deployment")["lumbar-node-worker-io"])
    assert "nvidia.com/gpu" not in io["resources"]["limits"]
    assert io["args"] == ["worker", "--queues", "io"] and io["image"] == "lumbar-node/node"


def test_node_probes_healthz_on_its_http_port() -> None:
    (container,) = containers(k8s_objects("Deployment")["lumbar-node"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    defaults = NodeConfig()
    assert ports == {"dimse": defaults.dimse_port, "http": defaults.http_port}
    data = k8s_objects("ConfigMap")["lumbar-node-config"]["data"]
    assert int(data["LUMBAR_NODE_HTTP_PORT"]) == ports["http"]
    assert int(data["LUMBAR_NODE_DIMSE_PORT"]) == ports["dimse"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_services_target_named_container_ports() -> None:
    services = k8s_objects("Service")
    (node,) = containers(k8s_objects("Deployment")["lumbar-node"])
    names = {p["name"] for p in node["ports"]}
    dimse = services["lumbar-node-dimse"]["spec"]
    assert dimse["type"] in ("LoadBalancer", "NodePort")
    assert dimse["externalTrafficPolicy"] == "Local"
    assert [(p["port"], p["targetPort"]) for p in dimse["ports"]] == [(11112, "dimse")]
    http = services["lumbar-node-http"]["spec"]
    assert [(p["port"], p["targetPort"]) for p in http["ports"]] == [(8080, "http")]
    assert {p["targetPort"] for p in dimse["ports"] + http["ports"]} <= names


def test_keda_scales_gpu_workers_on_the_gpu_queue() -> None:
    (scaled,) = k8s_objects("ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] in k8s_objects("Deployment")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "lumbar-node-worker-gpu"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == "gpu"
    redis = k8s_objects("Service")["lumbar-node-redis"]
    assert trigger["metadata"]["address"].startswith(redis["metadata"]["name"] + ".")
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_every_object_has_a_kind_and_name() -> None:
    for path, doc in k8s_documents():
        assert doc.get("apiVersion") and doc.get("kind"), path
        assert doc["metadata"]["name"], path


def test_kustomize_builds_into_one_namespace(tmp_path) -> None:
    """kubectl's built-in kustomize renders the manifests offline, as `kubectl apply -k` would."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    work = tmp_path / "k8s"
    shutil.copytree(K8S, work)
    shutil.copy(work / "secrets.env.example", work / "secrets.env")
    built = subprocess.run([kubectl, "kustomize", str(work)], capture_output=True, text=True,
                           timeout=60, check=False)
    assert built.returncode == 0, built.stderr
    objects = [d for d in yaml.safe_load_all(built.stdout) if d]
    kinds = sorted(d["kind"] for d in objects)
    assert kinds.count("Deployment") == 3 and "Secret" in kinds and "ScaledObject" in kinds
    assert {d["metadata"].get("namespace") for d in objects if d["kind"] != "Namespace"} == {
        "lumbar-node"}
    secret = next(d for d in objects if d["kind"] == "Secret")
    assert secret["metadata"]["name"] == "lumbar-node-secrets"
    assert set(secret["data"]) == set(read_env_file(K8S / "secrets.env.example"))
    images = {c["image"] for d in objects if d["kind"] == "Deployment"
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"lumbar-node/node:0.1.0", "lumbar-node/worker:0.1.0"}


def test_worker_liveness_outlasts_the_longest_task() -> None:
    """A solo-pool worker answers pings only between tasks: never kill it mid-study."""
    from dicom_node.broker import DELIVERY_TIME_LIMIT_S

    data = k8s_objects("ConfigMap")["lumbar-node-config"]["data"]
    longest = {"gpu": int(data["LUMBAR_NODE_JOB_TIME_LIMIT_SECONDS"]), "io": DELIVERY_TIME_LIMIT_S}
    for queue, limit in longest.items():
        (container,) = containers(k8s_objects("Deployment")[f"lumbar-node-worker-{queue}"])
        probe = container["livenessProbe"]
        assert probe["periodSeconds"] * probe["failureThreshold"] > limit, queue
        assert "inspect ping" in probe["exec"]["command"][-1]


def test_keda_list_is_the_queue_the_node_publishes_to() -> None:
    from dicom_node.broker import celery_settings
    from dicom_node.tasks import GPU_QUEUE, PROCESS_STUDY, QUEUE_OF

    (scaled,) = k8s_objects("ScaledObject").values()
    assert scaled["spec"]["triggers"][0]["metadata"]["listName"] == GPU_QUEUE
    assert QUEUE_OF[PROCESS_STUDY] == GPU_QUEUE
    data = k8s_objects("ConfigMap")["lumbar-node-config"]["data"]
    secrets = read_env_file(K8S / "secrets.env.example")
    config = load_config(env={**data, **secrets})
    # a key prefix would rename the list; a different Redis db would hide it from KEDA
    assert config.broker_key_prefix == ""
    assert config.broker_url.endswith("/" + scaled["spec"]["triggers"][0]["metadata"][
        "databaseIndex"])
    options = celery_settings(config)["broker_transport_options"]
    assert options["visibility_timeout"] > config.job_time_limit_seconds
