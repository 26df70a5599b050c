"""STOW-RS in, QIDO/WADO-RS out, admin audit API, metrics and health over real HTTP."""

from __future__ import annotations

import httpx
import pydicom
import pytest
from nodekit import wait_port, write_study
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from dicom_node.http.multipart import boundary_of, build, split_parts
from dicom_node.serve import Node


@pytest.fixture()
def node(node_config):
    node = Node(node_config.replace(cors_origins="https://viewer.example"), scheduler=False)
    node.start()
    wait_port(node_config.http_port)
    yield node
    node.stop()


@pytest.fixture()
def client(node_config):
    with httpx.Client(base_url=f"http://127.0.0.1:{node_config.http_port}", timeout=30,
                      headers={"Authorization": "Bearer secret-token"}) as c:
        yield c


def _stow(client, files, extra=()):
    body, ctype = build([f.read_bytes() for f in files] + list(extra), "application/dicom")
    return client.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})


def test_health_and_metrics_open(node, node_config):
    base = f"http://127.0.0.1:{node_config.http_port}"
    preflight = httpx.options(f"{base}/dicomweb/studies", headers={
        "Origin": "https://viewer.example", "Access-Control-Request-Method": "GET"})
    assert preflight.headers["access-control-allow-origin"] == "https://viewer.example"
    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    text = httpx.get(f"{base}/metrics").text
    assert "lumbar_instances_received_total 0.0" in text
    assert 'lumbar_queue_depth{queue="gpu"}' in text


def test_stow_requires_token_and_is_audited(node, node_config, tmp_path):
    _, files = write_study(tmp_path / "s", roles=("sag_t2",), n=1)
    body, ctype = build([files[0].read_bytes()], "application/dicom")
    r = httpx.post(f"http://127.0.0.1:{node_config.http_port}/dicomweb/studies", content=body,
                   headers={"Content-Type": ctype, "Authorization": "Bearer wrong"})
    assert r.status_code == 401
    with node.sessions() as s:
        assert s.scalar(select(AuditEvent).where(
            AuditEvent.event_type == "http.unauthorised")) is not None


def test_stow_qido_wado_roundtrip(node, client, tmp_path):
    uid, files = write_study(tmp_path / "s", roles=("sag_t2", "ax_t2"), n=2)
    r = _stow(client, files, extra=[b"not dicom at all"])
    node.indexer.flush()  # answered from the spool; the index follows in a batch
    assert r.status_code == 202
    doc = r.json()
    assert len(doc["00081199"]["Value"]) == 4 and len(doc["00081198"]["Value"]) == 1
    assert doc["00081198"]["Value"][0]["00081197"]["Value"] == [0xC210]
    assert _stow(client, files).status_code == 200  # duplicates are fine
    node.indexer.flush()

    studies = client.get("/dicomweb/studies").json()
    assert [s["0020000D"]["Value"][0] for s in studies] == [uid]
    assert studies[0]["00201208"]["Value"] == [4]  # NumberOfStudyRelatedInstances
    assert studies[0]["00100020"]["Value"] == ["NODE0001"]
    assert client.get("/dicomweb/studies", params={"offset": 1}).json() == []
    assert client.get("/dicomweb/studies", params={"limit": "x"}).status_code == 400
    assert client.get("/dicomweb/studies", params={"PatientID": "NOBODY"}).json() == []
    series = client.get(f"/dicomweb/studies/{uid}/series").json()
    assert len(series) == 2
    series_uid = series[0]["0020000E"]["Value"][0]
    insts = client.get(f"/dicomweb/studies/{uid}/series/{series_uid}/instances").json()
    assert len(insts) == 2
    sop = insts[0]["00080018"]["Value"][0]

    r = client.get(f"/dicomweb/studies/{uid}/series/{series_uid}/instances/{sop}")
    parts = split_parts(r.content, boundary_of(r.headers["content-type"]))
    assert len(parts) == 1 and parts[0][1][128:132] == b"DICM"
    r = client.get(f"/dicomweb/studies/{uid}")
    assert len(split_parts(r.content, boundary_of(r.headers["content-type"]))) == 4

    meta = client.get(f"/dicomweb/studies/{uid}/series/{series_uid}/metadata").json()
    assert len(meta) == 2 and "BulkDataURI" in meta[0]["7FE00010"]
    frame = client.get(meta[0]["7FE00010"]["BulkDataURI"].split("/dicomweb", 1)[1]
                       .join(["/dicomweb", ""]))
    payload = split_parts(frame.content, boundary_of(frame.headers["content-type"]))[0][1]
    ds = pydicom.dcmread(files[0])
    assert len(payload) == ds.Rows * ds.Columns * 2
    assert client.get("/dicomweb/studies/1.2.3/series").status_code == 404
    assert client.get("/dicomweb/studies/../../etc/series").status_code in (400, 404)


def test_admin_audit_filters_json_csv(node, client, tmp_path):
    uid, files = write_study(tmp_path / "s", roles=("sag_t2",), n=2)
    _stow(client, files)
    node.indexer.flush()
    rows = client.get("/admin/audit", params={"study": uid}).json()
    assert [r["event_type"] for r in rows] == ["study.first_instance", "instance.stored",
                                               "instance.stored"]
    assert all(r["study_instance_uid"] == uid for r in rows)
    rows = client.get("/admin/audit", params={"event_type": "instance.stored",
                                              "since": "2000-01-01T00:00:00"}).json()
    assert len(rows) == 2
    assert client.get("/admin/audit", params={"patient_id": "NOBODY"}).json() == []
    csv_text = client.get("/admin/audit", params={"study": uid, "format": "csv"}).text
    assert csv_text.splitlines()[0].startswith("id,at,event_type")
    # header, the three events, and the audit of the first query about this study
    assert len(csv_text.strip().splitlines()) == 5
    assert csv_text.strip().splitlines()[-1].split(",")[2] == "audit.queried"
    queried = client.get("/admin/audit", params={"event_type": "audit.queried"}).json()
    assert len(queried) >= 4
    assert client.get("/admin/audit", params={"format": "xml"}).status_code == 422
    assert client.get("/admin/deliveries", params={"status": "dead"}).json() == []
