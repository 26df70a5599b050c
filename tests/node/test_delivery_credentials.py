"""Destination credentials stay in the configuration: never in the database, audit or logs."""

from __future__ import annotations

import base64
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from _harness import free_port
from nodekit import Storescp
from sqlalchemy import select, text
from test_delivery import _create, _finished_job

from dicom_node.config import load_config, parse_destinations
from dicom_node.db.models import AuditEvent, Delivery
from dicom_node.delivery.service import _without_credentials, deliver
from workers.env import config_env


class RefusingDicomweb:
    """A real HTTP server in front of nothing: records each STOW-RS request's headers and
    answers 401, as a DICOMweb server does for wrong credentials."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                seen.append({"path": self.path, **dict(self.headers.items())})
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _rows(sessions, table: str) -> list[str]:
    with sessions() as s:
        return [repr(tuple(row)) for row in s.execute(text(f"SELECT * FROM {table}"))]


def test_secret_in_no_row_event_or_log_after_delivery_attempts(tmp_path, node_config,
                                                               pg_sessions, caplog):
    """On PostgreSQL only: the STOW-RS client spends ~30 s backing off from the closed port."""
    sessions = pg_sessions
    closed, pacs_port = free_port(), free_port()
    refusing = RefusingDicomweb()
    config = node_config.replace(destinations=parse_destinations(
        f"http://user:secret@127.0.0.1:{closed}/dicom-web,"
        f"http://user:secret@127.0.0.1:{refusing.port}/dicom-web,"
        f"PACS@127.0.0.1:{pacs_port}"), destination_token="token-not-sent-with-basic-auth")
    pacs = Storescp(tmp_path / "pacs", pacs_port)
    try:
        uid, job_id, n = _finished_job(tmp_path, config, sessions)
        ids = _create(sessions, config, job_id)
        with caplog.at_level(logging.DEBUG):
            outcomes = [deliver(sessions, config, i) for i in ids]
    finally:
        pacs.stop()
        refusing.stop()
    assert outcomes == ["pending", "pending", "delivered"]  # DIMSE still delivers
    assert len(pacs.files()) == n
    with sessions() as s:
        labels = [s.get(Delivery, i).destination for i in ids]
        errors = [s.get(Delivery, i).last_error for i in ids]
        events = list(s.scalars(select(AuditEvent).where(
            AuditEvent.event_type.in_(("delivery.failed", "delivery.sent")))))
    assert labels[:2] == [f"http://***@127.0.0.1:{closed}/dicom-web",
                          f"http://***@127.0.0.1:{refusing.port}/dicom-web"]
    assert "Connection refused" in errors[0] and "401" in errors[1]
    assert len(events) == 3 and {e.detail["destination"] for e in events} == set(labels)
    for table in ("deliveries", "audit_events"):
        assert not [row for row in _rows(sessions, table) if "secret" in row], table
    assert "secret" not in caplog.text
    # the credentials did reach the server, as basic authentication to the right host
    [request] = refusing.requests
    assert request["Authorization"] == "Basic " + base64.b64encode(b"user:secret").decode()
    assert request["Host"].split(":")[0] == "127.0.0.1"  # not the user name
    assert request["path"] == "/dicom-web/studies"


def test_destination_removed_from_config_dead_letters_with_reason(tmp_path, node_config,
                                                                  db_sessions):
    sessions = db_sessions
    old = node_config.replace(destinations=parse_destinations(
        "http://user:secret@127.0.0.1:1/old,PACS@127.0.0.1:2"))
    uid, job_id, _ = _finished_job(tmp_path, old, sessions)
    ids = _create(sessions, old, job_id)
    new = node_config.replace(destinations=parse_destinations("PACS@127.0.0.1:3"))
    assert [deliver(sessions, new, i) for i in ids] == ["dead", "dead"]
    with sessions() as s:
        rows = [s.get(Delivery, i) for i in ids]
        dead = list(s.scalars(select(AuditEvent).where(
            AuditEvent.event_type == "delivery.dead_lettered")))
    assert all("no longer configured" in r.last_error for r in rows)
    assert rows[0].attempts == 1 and rows[0].dead_lettered_at is not None
    assert sorted(e.detail["destination"] for e in dead) == sorted(r.destination for r in rows)


def test_labels_redact_and_child_processes_still_get_the_credentials(tmp_path):
    [web, dimse] = parse_destinations("https://u%40site:p%3Aw@pacs.example:8443/dicomweb/,"
                                      "PACS@10.0.0.5:104")
    assert web.label == "https://***@pacs.example:8443/dicomweb"
    assert web.endpoint == "https://pacs.example:8443/dicomweb"
    assert web.basic_auth == ("u@site", "p:w")
    assert "p%3Aw" not in repr(web) and "p%3Aw" not in repr(load_config(
        env={}, destinations=web.spec))
    assert (dimse.label, dimse.basic_auth) == ("PACS@10.0.0.5:104", None)
    assert parse_destinations("https://pacs.example/dicomweb")[0].basic_auth is None
    config = load_config(env={}, data_dir=tmp_path, destinations=f"{web.spec},{dimse.spec}")
    assert load_config(env=config_env(config)).destinations == config.destinations
    quoted = _without_credentials(f"POST {web.url}/studies refused for p:w", web)
    assert quoted == f"POST {web.label}/studies refused for ***"
    assert _without_credentials("association aborted", dimse) == "association aborted"
    with pytest.raises(ValueError, match="more than once"):
        parse_destinations("https://a:1@pacs/x,https://b:2@pacs/x")
