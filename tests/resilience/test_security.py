"""Who may talk to the node, and what it writes about patients: checked on the running
`lumbar-node serve` with dcmtk, httpx and real certificates."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import _harness
import httpx
import load
import pytest
from sqlalchemy import select

from dicom_node.db.models import AuditEvent
from dicom_node.http.multipart import build

sys.path.insert(0, str(_harness.REPO / "tests" / "deploy"))
from tls_certs import issue, make_ca


def audit_events(stack: _harness.Stack, event_type: str) -> list[AuditEvent]:
    with stack.sessions() as session:
        return list(session.scalars(select(AuditEvent).where(
            AuditEvent.event_type == event_type).order_by(AuditEvent.id)))


def test_unknown_ae_and_bad_tokens_are_refused_and_audited(tmp_path: Path, make_stack) -> None:
    stack = make_stack(tmp_path / "s", workers=0, pacs=False).start()
    files = load.plain_study(tmp_path / "study", seed=3, size=16, per_series=1)

    intruder = _harness.storescu(stack.config.dimse_port, files, calling="INTRUDER")
    assert intruder.returncode != 0
    assert "Association Rejected" in intruder.stderr or "rejected" in intruder.stderr.lower()
    wrong_called = _harness.storescu(stack.config.dimse_port, files, called="SOMEONEELSE")
    assert wrong_called.returncode != 0
    assert _harness.spool_files(stack.config.spool) == []
    rejected = audit_events(stack, "association.rejected")
    assert [e.ae_title for e in rejected] == ["INTRUDER", "PACS"]
    assert "INTRUDER" in rejected[0].detail["reason"]
    assert "SOMEONEELSE" in rejected[1].detail["reason"]

    base = f"http://127.0.0.1:{stack.config.http_port}"
    routes = [("GET", "/admin/audit"), ("GET", "/admin/deliveries"),
              ("POST", "/admin/studies/1.2.3/resend"), ("GET", "/dicomweb/studies")]
    with httpx.Client(base_url=base, timeout=10) as client:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": f"Basic {stack.config.api_token}"},
                            {"Authorization": f"Bearer {stack.config.api_token}x"}):
                response = client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
        good = {"Authorization": f"Bearer {stack.config.api_token}"}
        assert client.get("/admin/audit", headers=good).status_code == 200
        assert client.get("/healthz").status_code == 200  # the probe needs no token
    unauthorised = audit_events(stack, "http.unauthorised")
    assert len(unauthorised) == len(routes) * 4
    assert {e.detail["path"] for e in unauthorised} == {p for _, p in routes}
    assert stack.node.check_alive()


def test_dicom_tls_needs_a_certificate_from_the_site_ca(tmp_path: Path, make_stack) -> None:
    ca = make_ca(tmp_path / "ca")
    node_tls = issue(tmp_path / "node-tls", "lumbar-node", ca)
    pacs_tls = issue(tmp_path / "pacs-tls", "pacs", ca)
    stranger = issue(tmp_path / "stranger", "stranger", make_ca(tmp_path / "other-ca"))
    stack = make_stack(tmp_path / "s", workers=0, pacs=False, tls_cert=node_tls.cert,
                       tls_key=node_tls.key, tls_ca=node_tls.ca).start()
    files = load.plain_study(tmp_path / "study", seed=4, size=16, per_series=1)
    port = stack.config.dimse_port

    def tls_args(peer: object) -> list[str]:
        return ["--enable-tls", str(peer.key), str(peer.cert),  # type: ignore[attr-defined]
                "--add-cert-file", str(ca[0])]

    plain = _harness.storescu(port, files[:1])
    assert plain.returncode != 0
    foreign = _harness.storescu(port, files[:1], extra=tls_args(stranger))
    assert foreign.returncode != 0
    assert _harness.spool_files(stack.config.spool) == []

    trusted = _harness.storescu(port, files, extra=tls_args(pacs_tls))
    assert trusted.returncode == 0, trusted.stderr[-800:]
    assert len(_harness.spool_files(stack.config.spool)) == len(files)
    assert stack.node.check_alive()


def test_logs_at_info_name_no_patient(tmp_path: Path, make_stack) -> None:
    """A study runs end to end (ingest, close, job, outcome) and neither the node's nor the
    worker's INFO log holds the patient's name or ID; the audit trail does."""
    stack = make_stack(tmp_path / "s", workers=1, settle_seconds=0.5,
                       study_timeout_seconds=3.0).start()
    files = load.write_study(tmp_path / "study", seed=11, matrix=64)
    import pydicom

    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    patient_id, name = str(first.PatientID), str(first.PatientName)
    stack.send(files)
    uid = str(first.StudyInstanceUID)
    report = _harness.wait_for(
        lambda: (r := load.outcome(stack.sessions, [uid])) and load.settled(r) and r,
        240, "the study to be processed")
    assert report[uid]["job_state"] in ("done", "failed")
    logs = stack.logs()
    assert " INFO " in logs and "study closed" in logs
    for secret in {patient_id, name, name.replace("^", " "), *name.split("^")} - {""}:
        assert secret not in logs, f"{secret!r} appears in the logs"
    with stack.sessions() as session:
        stored = session.scalars(select(AuditEvent.patient_id).where(
            AuditEvent.event_type == "instance.stored")).all()
    assert set(stored) == {patient_id}


def test_http_speaks_tls_with_the_node_certificate(tmp_path: Path, make_stack) -> None:
    """With a certificate configured, STOW-RS, the admin API and the probe are HTTPS only."""
    ca = make_ca(tmp_path / "ca")
    node_tls = issue(tmp_path / "node-tls", "lumbar-node", ca)
    stack = make_stack(tmp_path / "s", workers=0, pacs=False, tls_cert=node_tls.cert,
                       tls_key=node_tls.key).start()
    files = load.plain_study(tmp_path / "study", seed=5, size=16, per_series=1)
    token = {"Authorization": f"Bearer {stack.config.api_token}"}
    port = stack.config.http_port

    trust = ssl.create_default_context(cafile=str(ca[0]))
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        body, content_type = build([p.read_bytes() for p in files], "application/dicom")
        stored = client.post("/dicomweb/studies", content=body,
                             headers={**token, "Content-Type": content_type})
        assert stored.status_code == 200, stored.text[:400]
        assert client.get("/admin/audit", headers=token).status_code == 200
    assert len(_harness.spool_files(stack.config.spool)) == len(files)

    with httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=10) as untrusted, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.get("/healthz")  # system CAs only: the site CA is not among them
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as plain, \
            pytest.raises(httpx.RemoteProtocolError):
        plain.get("/healthz")  # the TLS port hangs up on a plain HTTP request
    assert stack.node.check_alive()
