from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from load import UID_ROOT, mr_instance
from nodekit import storescu, write_study
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification
from sqlalchemy import func, select

from dicom_node.db.models import AuditEvent, Instance, Study
from dicom_node.dimse.scp import StoreSCP


@pytest.fixture()
def scp(node_config, sessions):
    server = StoreSCP(node_config, sessions)
    server.start()
    yield server
    server.stop()


def _indexed(scp: StoreSCP) -> None:
    """The answer comes once the file is in the spool; the index follows in a batch."""
    scp.ingestor.indexer.flush()


def _events(sessions, event_type: str) -> list[AuditEvent]:
    with sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.event_type == event_type)))


def test_storescu_study_is_spooled_and_indexed(tmp_path, node_config, sessions, scp):
    study_uid, files = write_study(tmp_path / "study", n=3)
    result = storescu(node_config.dimse_port, files)
    assert result.returncode == 0, result.stderr
    _indexed(scp)
    with sessions() as s:
        study = s.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        assert study is not None and study.instance_count == 9
        assert study.calling_ae == "PACS" and study.state == "receiving"
        paths = [Path(p) for p in s.scalars(select(Instance.path))]
    assert len(paths) == 9
    spool = node_config.spool.resolve()
    for path in paths:
        assert spool in path.parents and path.read_bytes()[128:132] == b"DICM"
    assert len(_events(sessions, "instance.stored")) == 9
    # same study again: stored once, counted once
    assert storescu(node_config.dimse_port, files).returncode == 0
    _indexed(scp)
    with sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 9
        assert s.scalar(select(Study.instance_count)) == 9


def test_unknown_calling_ae_rejected_and_audited(tmp_path, node_config, sessions, scp):
    _, files = write_study(tmp_path / "study", n=1, roles=("sag_t2",))
    result = storescu(node_config.dimse_port, files, calling="STRANGER")
    assert result.returncode != 0
    assert "Association Rejected" in result.stderr or "rejected" in result.stderr.lower()
    _indexed(scp)
    events = _events(sessions, "association.rejected")
    assert [e.ae_title for e in events] == ["STRANGER"]
    assert "not in ALLOWED_CALLERS" in events[0].detail["reason"]
    wrong_called = storescu(node_config.dimse_port, files, called="OTHERNODE")
    assert wrong_called.returncode != 0
    _indexed(scp)
    assert "OTHERNODE" in _events(sessions, "association.rejected")[1].detail["reason"]
    with sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 0


def test_echo(node_config, scp):
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node_config.dimse_port, ae_title="LUMBARNODE")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_corrupt_instance_fails_others_kept(tmp_path, node_config, sessions, scp):
    study_uid, files = write_study(tmp_path / "study", n=3, roles=("sag_t2",))
    bad = mr_instance(study_uid, generate_uid(UID_ROOT), 0, plane="sagittal", te=100, tr=3000)
    bad.PixelData = bad.PixelData[:100]  # truncated pixel data
    bad_path = tmp_path / "bad.dcm"
    bad.save_as(bad_path, enforce_file_format=True)
    result = storescu(node_config.dimse_port, [files[0], bad_path, files[1], files[2]],
                      "PACS", "LUMBARNODE", "--no-halt")
    assert "error: cannotunderstand" in result.stderr.lower()
    assert result.stderr.count("Received Store Response (Success)") == 3
    _indexed(scp)
    with sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 3
    refused = _events(sessions, "instance.refused")
    assert len(refused) == 1 and "truncated" in refused[0].detail["reason"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("field", ["StudyInstanceUID", "SOPInstanceUID", "SeriesInstanceUID"])
def test_hostile_uids_write_nothing(tmp_path, node_config, sessions, scp, field):
    ds = mr_instance(generate_uid(UID_ROOT), generate_uid(UID_ROOT), 0, plane="sagittal", te=100,
                     tr=3000)
    hostile = "../../../../tmp/lumbar-escape"
    setattr(ds, field, hostile)
    if field == "SOPInstanceUID":
        ds.file_meta.MediaStorageSOPInstanceUID = hostile
    ae = AE(ae_title="PACS")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", node_config.dimse_port, ae_title="LUMBARNODE")
    assert assoc.is_established
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = assoc.send_c_store(ds)
    assoc.release()
    assert 0xC000 <= status.Status <= 0xCFFF
    assert "invalid" in status.ErrorComment
    assert not Path("/tmp/lumbar-escape").exists()
    written = [p for p in node_config.data_dir.rglob("*.dcm")]
    assert written == []
    with sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 0


def test_instance_limit_gives_out_of_resources(tmp_path, node_config, sessions):
    config = node_config.replace(max_instances_per_study=2)
    server = StoreSCP(config, sessions)
    server.start()
    try:
        _, files = write_study(tmp_path / "study", n=3, roles=("sag_t2",))
        result = storescu(config.dimse_port, files)
        assert "Refused: OutOfResources" in result.stderr
    finally:
        server.stop()
    with sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 2


def test_database_down_accepts_into_the_spool_up_to_its_bound(tmp_path, node_config):
    """No database: instances are acknowledged from the spool until the backlog awaiting
    the index reaches SPOOL_MAX_PENDING_BYTES; past it 0xA700, and nothing half-written."""
    from dicom_node.db.session import make_engine, make_sessionmaker

    _, files = write_study(tmp_path / "study", n=4, roles=("sag_t2",))
    size = max(f.stat().st_size for f in files)
    config = node_config.replace(database_url="postgresql+psycopg://postgres@127.0.0.1:1/none",
                                 spool_max_pending_bytes=2 * size + 1024)
    engine = make_engine(config.db_url)
    server = StoreSCP(config, make_sessionmaker(engine))
    server.start()
    try:
        result = storescu(config.dimse_port, files, "PACS", "LUMBARNODE", "--no-halt")
        backlog = server.ingestor.indexer.backlog
    finally:
        server.stop()
        engine.dispose()
    assert result.stderr.count("Received Store Response (Success)") == 2, result.stderr
    assert result.stderr.count("Refused: OutOfResources") == 2
    assert backlog == 2
    assert len(list(config.spool.rglob("*.dcm"))) == 2
    assert list(config.spool.rglob(".incoming-*")) == []


@pytest.mark.parametrize("flag, syntax", [("-xd", "1.2.840.10008.1.2.1.99"),
                                          ("-xi", "1.2.840.10008.1.2")])
def test_transfer_syntaxes_kept_as_sent(tmp_path, node_config, sessions, scp, flag, syntax):
    import pydicom

    _, files = write_study(tmp_path / "study", n=1, roles=("sag_t2",))
    result = storescu(node_config.dimse_port, files, "PACS", "LUMBARNODE", flag)
    assert result.returncode == 0, result.stderr
    _indexed(scp)
    with sessions() as s:
        inst = s.scalar(select(Instance))
    assert inst.transfer_syntax_uid == syntax
    stored = pydicom.dcmread(inst.path)
    assert stored.pixel_array.tobytes() == pydicom.dcmread(files[0]).pixel_array.tobytes()


def test_spooled_file_is_the_sent_data_set_with_our_meta(tmp_path, node_config, sessions, scp):
    """No decode/re-encode: after the meta group, the spooled bytes are the sender's."""
    import pydicom

    _, files = write_study(tmp_path / "study", n=1, roles=("sag_t2",))
    assert storescu(node_config.dimse_port, files).returncode == 0
    _indexed(scp)
    with sessions() as s:
        spooled = Path(s.scalars(select(Instance.path)).one())
    sent, kept = pydicom.dcmread(files[0]), pydicom.dcmread(spooled)
    assert kept.file_meta.SourceApplicationEntityTitle == "PACS"
    assert kept.file_meta.MediaStorageSOPInstanceUID == sent.SOPInstanceUID
    assert kept.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID

    def body(path: Path) -> bytes:
        raw = path.read_bytes()
        group_length = int.from_bytes(raw[140:144], "little")  # (0002,0000) UL value
        return raw[144 + group_length:]

    assert body(spooled) == body(files[0])


def test_association_limit_refuses_transiently_audits_and_keeps_serving(tmp_path, node_config,
                                                                        sessions):
    config = node_config.replace(max_associations=1)
    server = StoreSCP(config, sessions)
    server.start()
    try:
        client = AE(ae_title="PACS")
        client.add_requested_context(MRImageStorage)
        held = client.associate("127.0.0.1", config.dimse_port, ae_title=config.ae_title)
        assert held.is_established
        second = client.associate("127.0.0.1", config.dimse_port, ae_title=config.ae_title)
        assert second.is_rejected
        held.release()
        _, files = write_study(tmp_path / "study", n=1, roles=("sag_t2",))
        result = storescu(config.dimse_port, files)
        assert result.returncode == 0, result.stderr
    finally:
        server.stop()
    accepted = _events(sessions, "association.accepted")
    rejected = _events(sessions, "association.rejected")
    assert len(accepted) == 2  # the held one and storescu's, not the refused one
    assert len(rejected) == 1 and "MAX_ASSOCIATIONS (1)" in rejected[0].detail["reason"]
    assert rejected[0].ae_title == "PACS"
    with sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 1
