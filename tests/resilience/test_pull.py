"""`lumbar-node pull` against a real Orthanc holding a synthetic study, feeding a running node."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _harness
import load
import numpy as np
import pydicom
import pytest
from sqlalchemy import func, select

from dicom_node import pull_cli
from dicom_node.db.models import AuditEvent, Instance, Study
from workers.env import config_env

sys.path.insert(0, str(_harness.REPO / "tests" / "deploy"))
from orthanc import Modality, OrthancServer


def run_pull(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    pull_cli.configure(parser)
    return pull_cli.run(parser.parse_args(list(argv)))


def test_pull_ingests_like_a_push(tmp_path: Path, make_stack, monkeypatch, capsys) -> None:
    files = load.write_study(tmp_path / "study", seed=5, matrix=64)
    first = pydicom.dcmread(files[0])
    uid, patient_id = str(first.StudyInstanceUID), str(first.PatientID)
    nowhere = Modality("NOWHERE", "127.0.0.1", _harness.free_port())  # routing target unused
    stack = make_stack(tmp_path / "s", workers=0, pacs=False, settle_seconds=0.5,
                       study_timeout_seconds=2.0).start()
    for key, value in config_env(stack.config).items():
        monkeypatch.setenv(key, value)

    with OrthancServer(tmp_path / "orthanc", destination=nowhere) as pacs:
        pacs.upload(files)
        assert run_pull("--url", pacs.dicomweb_url, "--study", uid) == 0
        assert f"{len(files)} retrieved, {len(files)} stored" in capsys.readouterr().out
        # a second pull finds everything already held and stores nothing
        assert run_pull("--url", pacs.dicomweb_url, "--filter", f"PatientID={patient_id}") == 0
        assert f"0 stored, {len(files)} already held" in capsys.readouterr().out

        assert run_pull("--url", pacs.dicomweb_url, "--study", "1.2.3.999") == 1
        assert "not found" in capsys.readouterr().err
        assert run_pull("--url", pacs.dicomweb_url, "--study", "../../etc") == 1
        assert "invalid StudyInstanceUID" in capsys.readouterr().err
        assert run_pull("--url", pacs.dicomweb_url, "--filter", "Foo=1") == 1
        assert "unsupported QIDO filter" in capsys.readouterr().err
    assert run_pull("--url", pacs.dicomweb_url, "--study", uid) == 1  # PACS gone: clear error
    assert "failed" in capsys.readouterr().err

    with stack.sessions() as session:
        sources = session.scalars(select(Instance.source)).all()
        pulled = session.scalars(select(AuditEvent).where(
            AuditEvent.event_type == "study.pulled").order_by(AuditEvent.id)).all()
        stored_events = session.scalar(select(func.count(AuditEvent.id)).where(
            AuditEvent.event_type == "instance.stored", AuditEvent.study_instance_uid == uid))
    assert sources == ["pull"] * len(files)
    assert stored_events == len(files)
    assert [(e.study_instance_uid, e.detail["stored"]) for e in pulled[:2]] == [
        (uid, len(files)), (uid, 0)]

    # the spooled copy carries the same pixels as the original
    spooled = {str(pydicom.dcmread(p).SOPInstanceUID): p
               for p in _harness.spool_files(stack.config.spool)}
    assert np.array_equal(pydicom.dcmread(spooled[str(first.SOPInstanceUID)]).pixel_array,
                          first.pixel_array)

    # the running node closes the pulled study into a job as it would a pushed one
    def closed() -> str | None:
        with stack.sessions() as session:
            state = session.scalar(select(Study.state).where(Study.study_instance_uid == uid))
        return state if state in ("queued", "processed") else None

    assert _harness.wait_for(closed, 30, "the pulled study to be closed")


@pytest.mark.parametrize("url", ["ftp://pacs/dicom-web", "pacs:8042", "http://"])
def test_pull_refuses_malformed_urls(url: str) -> None:
    from dicom_node.pull import make_client

    with pytest.raises(ValueError, match="DICOMweb URL"):
        make_client(url)
