"""The shipped Orthanc configuration and routing script, run in a real Orthanc.

Orthanc routes lumbar MR studies to the node (storescp here), accepts the node's results from
its declared AE title only, serves them over DICOMweb, and never sends them back.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from _harness import wait_for
from dcmtk_peers import StoreSCP, sop_uids, store_scu
from dicom_samples import NODE_MANUFACTURER, make_mr_series, make_result_sr
from orthanc import OrthancServer


@pytest.mark.parametrize(
    ("text", "lumbar"),
    [
        ("LSPINE", True),
        ("L-SPINE", True),
        ("MR L SPINE W/O", True),
        ("Lumbar spine", True),
        ("LSSPINE", True),
        ("lumbosacral", True),
        ("TLSPINE", True),
        ("CERVICAL SPINE", False),
        ("CSPINE", False),
        ("BRAIN", False),
        ("", False),
    ],
)
def test_lumbar_wording(pacs: OrthancServer, text: str, lumbar: bool) -> None:
    out = pacs.execute_lua(f'print(IsLumbarText("{text}"))')
    assert out.strip() == str(lumbar).lower()


def test_lumbar_study_routed_results_stored_and_not_routed_back(
    pacs: OrthancServer, node_scp: StoreSCP, tmp_path: Path
) -> None:
    sag = make_mr_series(tmp_path / "sag", slices=3)
    source = pydicom.dcmread(sag[0])
    ax = make_mr_series(
        tmp_path / "ax", study_uid=source.StudyInstanceUID, series_description="AX T2",
        body_part="SPINE", slices=2,
    )
    pacs.upload(sag + ax)
    expected = sop_uids(sag + ax)
    wait_for(lambda: expected <= node_scp.received_uids(), 20, "all instances at the node")
    pacs.wait_routed(source.StudyInstanceUID, "(2 series) sent to lumbarnode")

    sr_path = make_result_sr(source, tmp_path / "sr.dcm")
    sent = store_scu([sr_path], port=pacs.dicom_port, called_aet=pacs.aet, calling_aet=node_scp.aet)
    assert sent.returncode == 0, sent.stderr

    studies = pacs.qido_studies(StudyInstanceUID=source.StudyInstanceUID)
    assert len(studies) == 1
    assert set(studies[0]["00080061"]["Value"]) == {"MR", "SR"}  # ModalitiesInStudy
    sr_series = pacs.qido_series(source.StudyInstanceUID, Modality="SR")
    assert len(sr_series) == 1
    sr_series_uid = sr_series[0]["0020000E"]["Value"][0]
    parts = pacs.wado_series(source.StudyInstanceUID, sr_series_uid)
    assert len(parts) == 1
    retrieved = pydicom.dcmread(pydicom.filebase.DicomBytesIO(parts[0]))
    sr = pydicom.dcmread(sr_path)
    assert retrieved.SOPInstanceUID == sr.SOPInstanceUID
    assert retrieved.ContentSequence[0].TextValue == "L4-L5 canal: Moderate"

    # The result made the study unstable again; once stable, the script must skip it.
    study_id = pacs.study_id(source.StudyInstanceUID)
    pacs.wait_for_log(f"study {study_id} already routed, skipped", timeout=20)
    assert sr.SOPInstanceUID not in node_scp.received_uids()


def test_node_made_series_are_not_routed(
    pacs: OrthancServer, node_scp: StoreSCP, tmp_path: Path
) -> None:
    scanner = make_mr_series(tmp_path / "scanner", slices=2)
    study_uid = pydicom.dcmread(scanner[0]).StudyInstanceUID
    by_description = make_mr_series(
        tmp_path / "ai1", study_uid=study_uid, series_description="AI lumbar key images",
        slices=1,
    )
    by_manufacturer = make_mr_series(
        tmp_path / "ai2", study_uid=study_uid, series_description="Overlay",
        manufacturer=NODE_MANUFACTURER.upper(), slices=1,
    )
    pacs.upload(scanner + by_description + by_manufacturer)
    pacs.wait_routed(study_uid, "(1 series) sent to lumbarnode")
    expected = sop_uids(scanner)
    wait_for(lambda: expected <= node_scp.received_uids(), 20, "scanner series at the node")
    assert not sop_uids(by_description + by_manufacturer) & node_scp.received_uids()


def assert_skipped(pacs: OrthancServer, node_scp: StoreSCP, files: list[Path]) -> None:
    """Uploaded to Orthanc, the study of ``files`` is judged not lumbar and none reaches the
    node."""
    pacs.upload(files)
    pacs.wait_routed(pydicom.dcmread(files[0]).StudyInstanceUID,
                     "is not a lumbar spine MR, skipped")
    assert not sop_uids(files) & node_scp.received_uids()


def test_study_of_node_results_only_is_not_routed(
    pacs: OrthancServer, node_scp: StoreSCP, tmp_path: Path
) -> None:
    results = make_mr_series(tmp_path / "ai", series_description="AI lumbar overlay", slices=1)
    assert_skipped(pacs, node_scp, results)


def test_cervical_study_is_not_routed(
    pacs: OrthancServer, node_scp: StoreSCP, tmp_path: Path
) -> None:
    cervical = make_mr_series(
        tmp_path / "c", study_description="MR CERVICAL SPINE", body_part="CSPINE",
        series_description="SAG T2 C-SPINE", slices=2,
    )
    assert_skipped(pacs, node_scp, cervical)


def test_lumbar_words_in_study_description_route_the_study(
    pacs: OrthancServer, node_scp: StoreSCP, tmp_path: Path
) -> None:
    files = make_mr_series(
        tmp_path / "s", study_description="MRI LUMBAR SPINE", body_part="SPINE",
        series_description="t2_tse_sag", slices=2,
    )
    pacs.upload(files)
    expected = sop_uids(files)
    wait_for(lambda: expected <= node_scp.received_uids(), 20, "instances at the node")


def test_unlisted_calling_ae_cannot_store(pacs: OrthancServer, tmp_path: Path) -> None:
    source = pydicom.dcmread(make_mr_series(tmp_path / "s", slices=1)[0])
    sr_path = make_result_sr(source, tmp_path / "sr.dcm")
    sent = store_scu([sr_path], port=pacs.dicom_port, called_aet=pacs.aet, calling_aet="STRANGER")
    assert sent.returncode != 0
    assert pacs.study_id(source.StudyInstanceUID) is None


def test_results_stored_over_stow_rs_are_found_and_not_routed(
    pacs: OrthancServer, node_scp: StoreSCP, tmp_path: Path
) -> None:
    """The node's DICOMweb destination: STOW-RS with the client library the node delivers with."""
    from dicomweb_client.api import DICOMwebClient

    source = pydicom.dcmread(make_mr_series(tmp_path / "s", slices=1)[0])
    sr = pydicom.dcmread(make_result_sr(source, tmp_path / "sr.dcm"))
    client = DICOMwebClient(url=pacs.dicomweb_url)
    response = client.store_instances(datasets=[sr])
    assert response.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sr.SOPInstanceUID
    found = client.search_for_instances(
        study_instance_uid=sr.StudyInstanceUID, search_filters={"Modality": "SR"}
    )
    assert [i["00080018"]["Value"][0] for i in found] == [sr.SOPInstanceUID]
    pacs.wait_routed(sr.StudyInstanceUID, "is not a lumbar spine MR, skipped")
    assert sr.SOPInstanceUID not in node_scp.received_uids()
