"""The spooled file's meta group: the bytes pynetdicom would write, and readable as DICOM."""

from __future__ import annotations

import io

import pydicom
import pytest
from load import UID_ROOT, mr_instance
from pydicom.filebase import DicomBytesIO
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from dicom_node.dimse.part10 import file_meta, part10


@pytest.mark.parametrize("sop_uid", ["1.2.826.0.1.3680043.8.498.1", "1.2.3.44"])  # odd, even
def test_meta_equals_pynetdicoms_encoding(sop_uid: str) -> None:
    ours = file_meta(sop_class_uid=MRImageStorage, sop_instance_uid=sop_uid,
                     transfer_syntax_uid=ExplicitVRLittleEndian)
    theirs = encode_file_meta(create_file_meta(
        sop_class_uid=MRImageStorage, sop_instance_uid=pydicom.uid.UID(sop_uid),
        transfer_syntax=ExplicitVRLittleEndian))
    assert ours == theirs


def test_file_reads_back_with_the_calling_ae() -> None:
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    ds = mr_instance(study, series, 0, plane="sagittal", te=100, tr=3000)
    pixels = ds.pixel_array
    del ds.file_meta
    buf = DicomBytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True)  # the data set alone
    assert buf.getvalue()[:2] == b"\x08\x00"
    blob = part10(buf.getvalue(), sop_class_uid=ds.SOPClassUID,
                  sop_instance_uid=ds.SOPInstanceUID,
                  transfer_syntax_uid=ExplicitVRLittleEndian, source_ae="PACS")
    back = pydicom.dcmread(io.BytesIO(blob))
    assert back.file_meta.SourceApplicationEntityTitle == "PACS"
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert (back.pixel_array == pixels).all()


def test_a_non_ascii_uid_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        file_meta(sop_class_uid=MRImageStorage, sop_instance_uid="1.2.\u00e9",
                  transfer_syntax_uid=ExplicitVRLittleEndian)


def test_the_benchmark_floor_answers_every_instance(tmp_path) -> None:
    """benchmarks/pynetdicom_floor.py, the ingest benchmark's reference peer, really receives."""
    from ingest import PynetdicomFloor
    from nodekit import storescu, write_study
    from pynetdicom_floor import AE_TITLE

    _, files = write_study(tmp_path / "study", n=2, roles=("sag_t2",))
    with PynetdicomFloor(tmp_path / "floor") as floor:
        floor.start()
        done = storescu(floor.port, files, "PACS", AE_TITLE)
        assert done.returncode == 0, done.stderr
        assert floor.received() == len(files) == 2
