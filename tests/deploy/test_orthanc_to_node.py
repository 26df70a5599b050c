"""The shipped PACS settings against the node's real DICOM SCP.

Orthanc runs deploy/orthanc/orthanc.json and autoroute.lua; the node's SCP runs with the
environment docker-compose.yml gives it (AE title, allowlist), only with loopback ports, a temp
data dir and SQLite. A study Orthanc routes must land in the node's spool and database; a PACS
whose AE title the node does not list must be refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from _harness import free_port, wait_for
from deploy_files import DEPLOY, load_compose, read_env_file
from dicom_samples import make_mr_series, make_result_sr
from orthanc import Modality, OrthancServer, orthanc_binary
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from tls_certs import TlsFiles, issue, make_ca

from dicom_node.config import NodeConfig, load_config
from dicom_node.db import migrate
from dicom_node.db.models import Instance, Series, Study
from dicom_node.db.session import make_engine, make_sessionmaker
from dicom_node.dimse.scp import StoreSCP


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeConfig, sessionmaker]]:
    if orthanc_binary() is None:
        pytest.skip("Orthanc is not installed")
    compose = load_compose(read_env_file(DEPLOY / "env.example"))
    env = {k: str(v) for k, v in compose["services"]["node"]["environment"].items()}
    data = tmp_path_factory.mktemp("node")
    config = load_config(
        env=env, data_dir=data, spool_dir=data / "spool", database_url="",
        dimse_host="127.0.0.1", dimse_port=free_port(),
    )
    migrate.upgrade(config.db_url)
    engine = make_engine(config.db_url)
    scp = StoreSCP(config, make_sessionmaker(engine))
    scp.start()
    yield config, make_sessionmaker(engine)
    scp.stop()
    engine.dispose()


def pacs_for(
    node: NodeConfig, workdir: Path, aet: str, tls: TlsFiles | None = None,
    users: dict[str, str] | None = None,
) -> OrthancServer:
    return OrthancServer(
        workdir, destination=Modality(node.ae_title, "127.0.0.1", node.dimse_port), aet=aet,
        stable_age=1, tls=tls, users=users,
    )


def wait_store_job(pacs: OrthancServer, study_uid: str) -> dict:
    """The finished job in which the routing script sent this study to the node."""
    line = pacs.wait_routed(study_uid, "(1 series) sent to lumbarnode")
    job_id = line.rsplit("in job ", 1)[1].strip()
    return wait_for(
        lambda: (j := pacs.get_json(f"/jobs/{job_id}"))["State"] in ("Failure", "Success") and j,
        30, "the store job to finish")


def instances_of(sessions: sessionmaker[Session], study_uid: str) -> int:
    with sessions() as s:
        return int(s.scalar(
            select(func.count(Instance.id)).join(Series).join(Study).where(
                Study.study_instance_uid == study_uid)
        ) or 0)


def test_routed_study_reaches_the_node_spool(
    node: tuple[NodeConfig, sessionmaker], tmp_path: Path
) -> None:
    config, sessions = node
    aet = config.allowed_callers[0].ae_title  # the bundled Orthanc's AE title
    files = make_mr_series(tmp_path / "study", slices=3)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    with pacs_for(config, tmp_path / "pacs", aet) as pacs:
        pacs.upload(files)
        wait_for(lambda: instances_of(sessions, study_uid) == 3, 20,
                 f"3 instances of {study_uid} in the node database")
    spooled = list(config.spool.rglob("*.dcm"))
    uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in spooled}
    assert {str(pydicom.dcmread(f).SOPInstanceUID) for f in files} <= uids
    with sessions() as s:
        study = s.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        assert study is not None and study.calling_ae == aet


def test_pacs_not_on_the_allowlist_is_refused(
    node: tuple[NodeConfig, sessionmaker], tmp_path: Path
) -> None:
    config, sessions = node
    files = make_mr_series(tmp_path / "study", slices=1)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    with pacs_for(config, tmp_path / "pacs", "OTHERPACS") as pacs:
        pacs.upload(files)
        job = wait_store_job(pacs, study_uid)
    assert job["State"] == "Failure"
    assert instances_of(sessions, study_uid) == 0


@pytest.fixture()
def tls_node(
    node: tuple[NodeConfig, sessionmaker], tmp_path: Path
) -> Iterator[tuple[NodeConfig, sessionmaker, TlsFiles]]:
    """The same node with mutual DICOM TLS (LUMBAR_NODE_TLS_CERT/_KEY/_CA) on its own port."""
    config, sessions = node
    ca = make_ca(tmp_path / "ca")
    node_tls = issue(tmp_path / "node-tls", "lumbar-node", ca)
    tls_config = config.replace(
        dimse_port=free_port(), tls_cert=node_tls.cert, tls_key=node_tls.key, tls_ca=node_tls.ca
    )
    scp = StoreSCP(tls_config, sessions)
    scp.start()
    yield tls_config, sessions, issue(tmp_path / "pacs-tls", "pacs", ca)
    scp.stop()


def test_routing_over_mutual_dicom_tls(
    tls_node: tuple[NodeConfig, sessionmaker, TlsFiles], tmp_path: Path
) -> None:
    config, sessions, pacs_tls = tls_node
    files = make_mr_series(tmp_path / "study", slices=2)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    aet = config.allowed_callers[0].ae_title
    with pacs_for(config, tmp_path / "pacs", aet, tls=pacs_tls) as pacs:
        pacs.upload(files)
        assert wait_store_job(pacs, study_uid)["State"] == "Success"
    assert instances_of(sessions, study_uid) == 2


def test_plain_dicom_to_a_tls_node_is_refused(
    tls_node: tuple[NodeConfig, sessionmaker, TlsFiles], tmp_path: Path
) -> None:
    config, sessions, _ = tls_node
    files = make_mr_series(tmp_path / "study", slices=1)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    with pacs_for(config, tmp_path / "pacs", config.allowed_callers[0].ae_title) as pacs:
        pacs.upload(files)
        assert wait_store_job(pacs, study_uid)["State"] == "Failure"
    assert instances_of(sessions, study_uid) == 0


def test_node_delivers_results_to_orthanc_which_keeps_them(
    node: tuple[NodeConfig, sessionmaker], tmp_path: Path
) -> None:
    """The io worker's C-STORE with the compose settings (AE LUMBARNODE to ORTHANC): Orthanc
    accepts it because orthanc.json declares the node, and does not route it back."""
    from dicom_node.delivery.senders import DeliveryError, send_dimse

    config, _ = node
    source = pydicom.dcmread(make_mr_series(tmp_path / "s", slices=1)[0])
    sr = make_result_sr(source, tmp_path / "sr.dcm")
    (orthanc_dest,) = config.destinations
    with pacs_for(config, tmp_path / "pacs", orthanc_dest.ae_title) as pacs:
        local = dataclasses.replace(orthanc_dest, host="127.0.0.1", port=pacs.dicom_port)
        assert send_dimse(config, local, [sr]) == 1
        pacs.wait_routed(source.StudyInstanceUID, "is not a lumbar spine MR, skipped")
        series = pacs.qido_series(source.StudyInstanceUID)
        assert [s["0008103E"]["Value"][0] for s in series] == ["AI lumbar stenosis report"]
        # Orthanc accepts the association (echo is open to all) but refuses the store
        other = pydicom.dcmread(make_mr_series(tmp_path / "o", slices=1)[0])
        other_sr = make_result_sr(other, tmp_path / "other_sr.dcm")
        with pytest.raises(DeliveryError):
            send_dimse(config.replace(ae_title="NOTDECLARED"), local, [other_sr])
        assert pacs.study_id(other.StudyInstanceUID) is None


def test_node_delivers_results_over_mutual_tls(
    tls_node: tuple[NodeConfig, sessionmaker, TlsFiles], tmp_path: Path
) -> None:
    """With LUMBAR_NODE_TLS_CA set the node's C-STORE client speaks TLS to a TLS-only Orthanc."""
    from dicom_node.delivery.senders import send_dimse

    config, _, pacs_tls = tls_node
    source = pydicom.dcmread(make_mr_series(tmp_path / "s", slices=1)[0])
    sr = make_result_sr(source, tmp_path / "sr.dcm")
    (orthanc_dest,) = config.destinations
    with pacs_for(config, tmp_path / "pacs", orthanc_dest.ae_title, tls=pacs_tls) as pacs:
        local = dataclasses.replace(orthanc_dest, host="127.0.0.1", port=pacs.dicom_port)
        assert send_dimse(config, local, [sr]) == 1
        assert pacs.qido_studies(StudyInstanceUID=source.StudyInstanceUID)


def test_node_delivers_results_over_stow_rs_to_orthanc_with_a_login(
    node: tuple[NodeConfig, sessionmaker], tmp_path: Path
) -> None:
    """A DICOMweb destination written as http://user:password@host:8042/dicom-web reaches an
    Orthanc whose HTTP needs a login (credentials.json), as the guide tells PACS admins."""
    from dicom_node.config import parse_destinations
    from dicom_node.delivery.senders import DeliveryError, send_stow

    config, _ = node
    source = pydicom.dcmread(make_mr_series(tmp_path / "s", slices=1)[0])
    sr = make_result_sr(source, tmp_path / "sr.dcm")
    with pacs_for(config, tmp_path / "pacs", "ORTHANC", users={"node": "s3cret"}) as pacs:
        base = f"127.0.0.1:{pacs.http_port}/dicom-web"
        (dest,) = parse_destinations(f"http://node:s3cret@{base}")
        assert send_stow(config, dest, [sr]) == 1
        assert pacs.qido_studies(StudyInstanceUID=source.StudyInstanceUID)
        (wrong,) = parse_destinations(f"http://node:wrong@{base}")
        with pytest.raises(DeliveryError):
            send_stow(config, wrong, [sr])
