"""A real PACS on loopback for tests: Debian's Orthanc with the shipped configuration.

Orthanc is started with the production configuration (`deploy/orthanc/orthanc.json`) and the
production routing script (`deploy/orthanc/autoroute.lua`); only what a test must change is
overridden (ports, storage, plugin path, stable age, where the node lives). That way a test
failure means the shipped PACS configuration is wrong, not a test copy of it.

The node's end of the link is any DICOM storage SCP: `dcmtk_peers.StoreSCP` stands in for it
here, and an end-to-end test passes the real node's AE/host/port as `destination` instead.

Reuse from another test folder (benchmarks/ must be on sys.path too, as tests/conftest.py
puts it, for the process and polling helpers of `_harness`)::

    sys.path.insert(0, str(REPO / "tests" / "deploy"))
    from orthanc import Modality, OrthancServer
    with OrthancServer(tmp_path / "pacs", destination=Modality("LUMBARNODE", "127.0.0.1", port)):
        ...
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _harness import Process, free_port, wait_for
from tls_certs import TlsFiles

REPO = Path(__file__).resolve().parents[2]
DEPLOY_ORTHANC = REPO / "deploy" / "orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
NODE_MODALITY = "lumbarnode"


def orthanc_binary() -> str | None:
    """The Orthanc executable, or None where it is not installed."""
    found = shutil.which("Orthanc")
    if found:
        return found
    return "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None


@dataclass(frozen=True)
class Modality:
    """A DICOM application entity as Orthanc's DicomModalities sees it."""

    aet: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if not 0 < len(self.aet) <= 16:
            raise ValueError(f"AE title must be 1-16 characters: {self.aet!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")


def load_deploy_config() -> dict[str, Any]:
    return json.loads((DEPLOY_ORTHANC / "orthanc.json").read_text())


def harness_config(
    workdir: Path,
    *,
    destination: Modality,
    http_port: int,
    dicom_port: int,
    aet: str = "ORTHANC",
    stable_age: int = 2,
    extra_modalities: dict[str, Modality] | None = None,
    tls: TlsFiles | None = None,
    users: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The shipped orthanc.json with the node's address injected and ports/storage made local.

    With `tls`, Orthanc's DICOM port speaks TLS only, requires a client certificate signed by
    `tls.ca`, and reaches the node over TLS (`UseDicomTls`) with the same certificate.
    With `users`, HTTP needs one of these logins, as credentials.json sets it up in production.
    """
    config = load_deploy_config()
    node_entry = dict(config["DicomModalities"][NODE_MODALITY])
    node_entry.update(AET=destination.aet, Host=destination.host, Port=destination.port)
    if tls is not None:
        node_entry["UseDicomTls"] = True
        config.update(
            DicomTlsEnabled=True,
            DicomTlsCertificate=str(tls.cert),
            DicomTlsPrivateKey=str(tls.key),
            DicomTlsTrustedCertificates=str(tls.ca),
            DicomTlsRemoteCertificateRequired=True,
        )
    modalities: dict[str, Any] = {NODE_MODALITY: node_entry}
    for name, modality in (extra_modalities or {}).items():
        modalities[name] = {
            "AET": modality.aet, "Host": modality.host, "Port": modality.port,
            "AllowEcho": True, "AllowStore": True,
        }
    config.update(
        Name=f"test-pacs-{http_port}",
        StorageDirectory=str(workdir / "storage"),
        IndexDirectory=str(workdir / "storage"),
        HttpPort=http_port,
        DicomPort=dicom_port,
        DicomAet=aet,
        RemoteAccessAllowed=False,
        AuthenticationEnabled=False,
        Plugins=[str(DICOMWEB_PLUGIN)],
        LuaScripts=[str(DEPLOY_ORTHANC / "autoroute.lua")],
        StableAge=stable_age,
        DicomModalities=modalities,
        ExecuteLuaEnabled=True,
    )
    if users:
        config.update(AuthenticationEnabled=True, RegisteredUsers=dict(users))
    return config


class OrthancServer(Process):
    """One Orthanc process with its own storage, ports and log, started on entry and stopped
    on exit."""

    def __init__(
        self,
        workdir: Path,
        *,
        destination: Modality,
        aet: str = "ORTHANC",
        stable_age: int = 2,
        extra_modalities: dict[str, Modality] | None = None,
        tls: TlsFiles | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        binary = orthanc_binary()
        if binary is None:
            raise FileNotFoundError("Orthanc is not installed (no Orthanc on PATH or /usr/sbin)")
        if not DICOMWEB_PLUGIN.exists():
            raise FileNotFoundError(f"Orthanc DICOMweb plugin missing: {DICOMWEB_PLUGIN}")
        self.binary = binary
        self.workdir = Path(workdir)
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.config = harness_config(
            self.workdir, destination=destination, http_port=self.http_port,
            dicom_port=self.dicom_port, aet=aet, stable_age=stable_age,
            extra_modalities=extra_modalities, tls=tls, users=users,
        )
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        auth = next(iter(users.items())) if users else None
        self.client = httpx.Client(base_url=self.url, timeout=10.0, auth=auth)
        config_path = self.workdir / "orthanc.json"
        super().__init__("Orthanc", [binary, str(config_path)], self.workdir / "orthanc.log",
                         cwd=self.workdir)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> OrthancServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "orthanc.json").write_text(json.dumps(self.config, indent=2))
        super().start()

        def answers() -> bool:
            try:
                return self.client.get("/system").status_code == 200
            except httpx.TransportError:
                return False

        self.await_ready(answers, timeout, "Orthanc /system to answer", interval=0.1)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        self.client.close()

    def __enter__(self) -> OrthancServer:
        return self.start()

    # -- REST ------------------------------------------------------------------------------
    def get_json(self, path: str, **params: str) -> Any:
        response = self.client.get(path, params=params or None)
        response.raise_for_status()
        return response.json()

    def upload(self, files: Iterable[Path]) -> list[str]:
        """POST each file to /instances; returns Orthanc instance ids."""
        ids = []
        for path in files:
            response = self.client.post("/instances", content=Path(path).read_bytes())
            response.raise_for_status()
            ids.append(response.json()["ID"])
        return ids

    def study_id(self, study_instance_uid: str) -> str | None:
        """Orthanc's id of a study by StudyInstanceUID, or None if it holds no such study."""
        response = self.client.post("/tools/lookup", content=study_instance_uid)
        response.raise_for_status()
        for hit in response.json():
            if hit["Type"] == "Study":
                return str(hit["ID"])
        return None

    def wait_for_log(self, text: str, timeout: float = 20.0) -> str:
        """Wait for a line containing `text` in Orthanc's log (Lua `print` lands there)."""

        def line() -> str | None:
            for entry in self.log.read_text(errors="replace").splitlines():
                if text in entry:
                    return entry
            return None

        try:
            return wait_for(line, timeout, f"Orthanc log line {text!r}")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; log tail:\n{self.tail(40)}") from None

    def wait_routed(self, study_instance_uid: str, verdict: str, timeout: float = 20.0) -> str:
        """Wait for autoroute.lua's decision on a study; it logs the Orthanc study id with
        "(N series) sent to …", "already routed, skipped" or "is not a lumbar spine MR"."""
        study_id = wait_for(lambda: self.study_id(study_instance_uid), 10,
                            f"study {study_instance_uid} in Orthanc", interval=0.1)
        return self.wait_for_log(f"study {study_id} {verdict}", timeout=timeout)

    def study_is_stable(self, study_id: str) -> bool:
        return bool(self.get_json(f"/studies/{study_id}")["IsStable"])

    def execute_lua(self, script: str) -> str:
        """Run Lua in Orthanc's scripting context (where autoroute.lua's functions live)."""
        response = self.client.post("/tools/execute-script", content=script)
        response.raise_for_status()
        return response.text

    def qido_studies(self, **params: str) -> list[dict[str, Any]]:
        response = self.client.get(
            "/dicom-web/studies", params=params, headers={"Accept": "application/dicom+json"}
        )
        response.raise_for_status()
        return response.json() if response.content else []

    def qido_series(self, study_instance_uid: str, **params: str) -> list[dict[str, Any]]:
        response = self.client.get(
            f"/dicom-web/studies/{study_instance_uid}/series",
            params=params, headers={"Accept": "application/dicom+json"},
        )
        response.raise_for_status()
        return response.json() if response.content else []

    def wado_series(self, study_instance_uid: str, series_instance_uid: str) -> list[bytes]:
        """WADO-RS retrieve of a series: the Part 10 bytes of each instance."""
        response = self.client.get(
            f"/dicom-web/studies/{study_instance_uid}/series/{series_instance_uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
        )
        response.raise_for_status()
        return split_multipart(response.headers["content-type"], response.content)


def split_multipart(content_type: str, body: bytes) -> list[bytes]:
    """Parts of a multipart/related body (WADO-RS), without their part headers."""
    boundary = None
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        raise ValueError(f"no boundary in content type {content_type!r}")
    parts = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, payload = chunk.partition(b"\r\n\r\n")
        parts.append(payload.removesuffix(b"\r\n"))
    return parts
