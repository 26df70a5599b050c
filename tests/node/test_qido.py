"""QIDO-RS over real HTTP against a running node holding two patients' studies.

The node runs on SQLite and on PostgreSQL; the studies go in by STOW-RS. What matters most
is that a patient filter, in whatever form a viewer writes it (OHIF sends the tag number
``00100020``), never lists another patient's study, and that no filter is silently dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import _harness
import httpx
import pytest
from load import write_series
from nodekit import loopback_config, wait_port, write_study

from dicom_node.config import NodeConfig, load_config
from dicom_node.http.multipart import build
from dicom_node.serve import Node

TOKEN = "secret-token"
FUZZY = ('"The fuzzymatching parameter is not supported. '
         'Only literal matching has been performed."')
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def _config(data_dir: Path, **changes: object) -> NodeConfig:
    return loopback_config(data_dir, TOKEN, **changes)


@contextlib.contextmanager
def _running(config: NodeConfig) -> Iterator[tuple[httpx.Client, Node]]:
    node = Node(config, scheduler=False)
    node.start()
    try:
        wait_port(config.http_port)
        with httpx.Client(base_url=f"http://127.0.0.1:{config.http_port}", timeout=30,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            yield client, node
    finally:
        node.stop()


def _stow(client: httpx.Client, node: Node, files: list[Path]) -> None:
    body, ctype = build([f.read_bytes() for f in files], "application/dicom")
    response = client.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text
    node.indexer.flush()  # answered from the spool; searches see it once indexed


class Stored:
    """The running node and what was sent to it."""

    def __init__(self, client: httpx.Client, base: str, studies: dict[str, str],
                 series: dict[str, list[str]]) -> None:
        self.client, self.base, self.studies, self.series = client, base, studies, series

    def uids(self, path: str = "/dicomweb/studies", **params: str) -> list[str]:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return [item["0020000D"]["Value"][0] for item in response.json()]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stored(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    """Patient A with a 2023 and a 2024 lumbar MR, patient B with a 2025 MR plus a CT
    series; stored in that order, so B's study is the most recent."""
    tmp = tmp_path_factory.mktemp(f"qido-{request.param}")
    with contextlib.ExitStack() as stack:
        url = ""
        if request.param == "postgresql":
            url = stack.enter_context(_harness.throwaway_database(prefix="lumbar_node_test_"))
        config = _config(tmp / "data", database_url=url)
        client, node = stack.enter_context(_running(config))
        studies: dict[str, str] = {}
        series: dict[str, list[str]] = {}
        for name, patient, pname, date, time, extra in (
                ("A2023", "PAT-A", "DOE^JANE", "20231102", "083000", ()),
                ("A2024", "PAT-A", "DOE^JANE", "20240315", "101500", ()),
                ("B2025", "PAT-B", "SMITH^JOHN", "20250620", "154500", ("CT",))):
            attrs = {"patient_id": patient, "PatientName": pname, "StudyDate": date,
                     "StudyTime": time, "AccessionNumber": f"ACC-{name}",
                     "StudyDescription": f"LUMBAR SPINE {name}"}
            uid, files = write_study(tmp / name, roles=("sag_t2", "ax_t2"), n=2, **attrs)
            for modality in extra:
                files += write_series(tmp / name / "extra", uid, "ax_t2", 1,
                                      description="CT SCOUT", modality=modality, **attrs)
            _stow(client, node, files)
            studies[name] = uid
            series[name] = [str(f) for f in files]
        yield Stored(client, f"http://127.0.0.1:{config.http_port}/dicomweb", studies, series)


def test_ohif_patient_tag_key_never_lists_another_patients_study(stored: Stored) -> None:
    """The exact study-browser request of OHIF 3 for one patient."""
    ohif = {"00100020": "PAT-B", "limit": "101", "offset": "0", "fuzzymatching": "false",
            "includefield": "00081030,00080060"}
    response = stored.client.get("/dicomweb/studies", params=ohif)
    assert response.status_code == 200 and "warning" not in response.headers
    rows = response.json()
    assert [r["0020000D"]["Value"][0] for r in rows] == [stored.studies["B2025"]]
    assert rows[0]["00100020"]["Value"] == ["PAT-B"]
    assert rows[0]["00081030"]["Value"] == ["LUMBAR SPINE B2025"]
    assert sorted(stored.uids(**{"00100020": "PAT-A"})) == sorted(
        [stored.studies["A2023"], stored.studies["A2024"]])
    assert stored.uids(**{"00100020": "PAT"}) == []  # no implicit prefix matching
    assert stored.uids(**{"00100020": "pat-b"}) == []  # LO matches case-sensitively
    # the same filter at the other levels
    for path in ("/dicomweb/series", "/dicomweb/instances"):
        for key in ("PatientID", "00100020"):
            assert set(stored.uids(path, **{key: "PAT-B"})) == {stored.studies["B2025"]}
    assert len(stored.client.get("/dicomweb/instances", params={"00100020": "PAT-B"})
               .json()) == 5


def test_keyword_and_tag_keys_give_the_same_answer(stored: Stored) -> None:
    a2024 = stored.studies["A2024"]
    for keyword, tag, value in (("StudyInstanceUID", "0020000D", a2024),
                                ("AccessionNumber", "00080050", "ACC-A2024"),
                                ("PatientName", "00100010", "DOE^JANE"),
                                ("StudyDate", "00080020", "20240315"),
                                ("ModalitiesInStudy", "00080061", "CT")):
        by_keyword = stored.uids(**{keyword: value})
        assert by_keyword and by_keyword == stored.uids(**{tag: value}), keyword
    assert stored.uids(**{"0020000d": a2024}) == [a2024]  # hex digits in either case


def test_wildcard_matching_on_names_and_descriptions(stored: Stored) -> None:
    a = {stored.studies["A2023"], stored.studies["A2024"]}
    assert set(stored.uids(PatientName="doe*")) == a  # PN: case-insensitive
    assert stored.uids(PatientName="*SMI?H*") == [stored.studies["B2025"]]
    assert stored.uids(PatientName="doe^jane") == sorted(a, key=stored.uids().index)
    assert stored.uids(PatientName="DOE") == []  # single value matching is literal
    assert stored.uids(PatientName="*") == stored.uids()  # "*" alone: universal
    assert stored.uids(StudyDescription="*A2023") == [stored.studies["A2023"]]
    assert stored.uids(StudyDescription="*spine*") == []  # LO: case-sensitive
    assert len(stored.uids(StudyDescription="LUMBAR SPINE ?202?")) == 3


def test_date_and_time_ranges(stored: Stored) -> None:
    s = stored.studies
    assert stored.uids(StudyDate="20240101-20241231") == [s["A2024"]]
    assert stored.uids(StudyDate="-20240101") == [s["A2023"]]
    assert stored.uids(StudyDate="20250101-") == [s["B2025"]]
    assert stored.uids(StudyDate="20240315") == [s["A2024"]]
    assert set(stored.uids(StudyDate="20231102-20240315")) == {s["A2023"], s["A2024"]}
    assert stored.uids(StudyTime="1000-1100") == [s["A2024"]]  # 10:00:00 .. 11:00:59.999999
    assert stored.uids(StudyTime="15") == [s["B2025"]]  # a partial time covers its hour
    assert stored.uids(StudyDate="20240101-20241231", PatientID="PAT-B") == []
    for bad in ("2024", "20241301x", "20241231-20240101", "-"):
        response = stored.client.get("/dicomweb/studies", params={"StudyDate": bad})
        assert response.status_code == 400, bad
        assert "StudyDate" in response.json()["detail"]


def test_uid_list_matching(stored: Stored) -> None:
    s = stored.studies
    both = {s["A2023"], s["B2025"]}
    assert set(stored.uids(StudyInstanceUID=f"{s['A2023']},{s['B2025']}")) == both
    assert set(stored.uids(**{"0020000D": f"{s['A2023']}\\{s['B2025']}"})) == both
    assert stored.uids(StudyInstanceUID=f"{s['A2023']},1.2.3.4") == [s["A2023"]]
    response = stored.client.get("/dicomweb/studies", params={"StudyInstanceUID": "1.2.*"})
    assert response.status_code == 400 and "StudyInstanceUID" in response.json()["detail"]


def test_modalities_in_study(stored: Stored) -> None:
    s = stored.studies
    assert stored.uids(ModalitiesInStudy="CT") == [s["B2025"]]
    assert len(stored.uids(ModalitiesInStudy="MR")) == 3
    assert stored.uids(ModalitiesInStudy="CT,XA") == [s["B2025"]]
    assert stored.uids(ModalitiesInStudy="XA") == []
    row = stored.client.get("/dicomweb/studies", params={"PatientID": "PAT-B"}).json()[0]
    assert row["00080061"]["Value"] == ["CT", "MR"]
    assert row["00201206"]["Value"] == [3] and row["00201208"]["Value"] == [5]


def test_includefield_lists_repeats_and_all(stored: Stored) -> None:
    uid = stored.studies["A2024"]
    series_uid = stored.client.get(f"/dicomweb/studies/{uid}/series",
                                   params={"SeriesDescription": "SAG*"}).json()
    assert len(series_uid) == 1
    path = f"/dicomweb/studies/{uid}/series/{series_uid[0]['0020000E']['Value'][0]}/instances"
    plain = stored.client.get(path).json()
    assert len(plain) == 2 and "00180081" not in plain[0]  # EchoTime not a default
    assert plain[0]["00081190"]["Value"][0].startswith(stored.base + f"/studies/{uid}/series/")
    listed = stored.client.get(path, params=[("includefield", "EchoTime,00180080"),
                                             ("includefield", "ImageOrientationPatient")]).json()
    assert listed[0]["00180081"]["Value"] == [100.0]
    assert listed[0]["00180080"]["Value"] == [3000.0]
    assert listed[0]["00200037"]["Value"] == [0, 1, 0, 0, 0, -1]
    everything = stored.client.get(path, params={"includefield": "all"}).json()[0]
    assert {"00180081", "00280030", "00100010", "00200032"} <= set(everything)
    assert "7FE00010" not in everything
    study = stored.client.get("/dicomweb/studies", params={"StudyInstanceUID": uid,
                                                           "includefield": "all"}).json()[0]
    assert study["00100010"]["Value"] == [{"Alphabetic": "DOE^JANE"}]
    assert "00180081" not in study  # a series/instance attribute is not a study's
    asked = stored.client.get("/dicomweb/studies", params={
        "StudyInstanceUID": uid, "includefield": "PatientBirthDate", "IssuerOfPatientID": ""}
    ).json()[0]
    assert asked["00100030"] == {"vr": "DA"} and asked["00100021"] == {"vr": "LO"}


def test_limit_and_offset_page_through_the_results(stored: Stored) -> None:
    everything = stored.uids()
    assert len(everything) == 3 and everything[0] == stored.studies["B2025"]
    first = stored.client.get("/dicomweb/studies", params={"limit": 2})
    assert first.status_code == 200 and "warning" not in first.headers
    pages = stored.uids(limit="2") + stored.uids(limit="2", offset="2")
    assert pages == everything
    assert stored.uids(offset="3") == []
    assert stored.uids(limit="5000") == everything  # capped at the server's maximum
    assert stored.uids(PatientID="PAT-A", limit="1", offset="1") == [stored.studies["A2023"]]
    instances = stored.client.get("/dicomweb/instances",
                                  params={"PatientID": "PAT-A", "limit": 3, "offset": 2}).json()
    assert len(instances) == 3
    for bad in ({"limit": "0"}, {"offset": "-1"}, {"limit": "x"}, {"limit": ["1", "2"]}):
        assert stored.client.get("/dicomweb/studies", params=bad).status_code == 400, bad


def test_unknown_and_unsupported_keys_are_refused_not_ignored(stored: Stored) -> None:
    for params, named in (
            ({"PatientId": "PAT-B"}, "PatientId"),  # keywords are case-sensitive
            ({"00091010": "x"}, "00091010"),  # private tag
            ({"0010002": "PAT-B"}, "0010002"),  # seven hex digits
            ({"Modality": "MR"}, "Modality"),  # a series key at the study level
            ({"RequestAttributesSequence.ScheduledProcedureStepID": "1"}, "sequence"),
            ({"PatientName": "DOE\\SMITH"}, "PatientName"),  # multiple-value matching
            ({"PatientID": ["PAT-A", "PAT-B"]}, "PatientID"),  # the same key twice
            ({"fuzzymatching": "maybe"}, "fuzzymatching"),
            ({"includefield": "NoSuchAttribute"}, "NoSuchAttribute"),
            ({"NumberOfStudyRelatedInstances": "5"}, "NumberOfStudyRelatedInstances"),
            ({"PixelData": "x"}, "PixelData")):
        response = stored.client.get("/dicomweb/studies", params=params)
        assert response.status_code == 400, params
        assert named in response.json()["detail"], response.json()
    # the same Modality key is a series key, and works there
    series = stored.client.get("/dicomweb/series", params={"Modality": "CT"}).json()
    assert [s["0020000D"]["Value"][0] for s in series] == [stored.studies["B2025"]]
    assert series[0]["0008103E"]["Value"] == ["CT SCOUT"]
    # an empty value only asks for the attribute back (universal matching)
    rows = stored.client.get("/dicomweb/studies", params={"Modality": ""}).json()
    assert len(rows) == 3


def test_fuzzymatching_is_answered_with_the_standard_warning(stored: Stored) -> None:
    response = stored.client.get("/dicomweb/studies", params={"fuzzymatching": "true",
                                                              "PatientName": "doe*"})
    assert response.status_code == 200
    assert response.headers["warning"] == f"299 {stored.base}: {FUZZY}"
    assert len(response.json()) == 2  # literal (wildcard) matching was still applied
    assert "warning" not in stored.client.get("/dicomweb/studies", params={
        "fuzzymatching": "false"}).headers


def test_series_and_instance_level_queries(stored: Stored) -> None:
    uid = stored.studies["B2025"]
    series = stored.client.get(f"/dicomweb/studies/{uid}/series").json()
    assert len(series) == 3 and all(s["0020000D"]["Value"] == [uid] for s in series)
    ct = stored.client.get(f"/dicomweb/studies/{uid}/series", params={"00080060": "CT"}).json()
    assert len(ct) == 1 and ct[0]["00201209"]["Value"] == [1]
    assert stored.client.get(f"/dicomweb/studies/{uid}/series",
                             params={"PatientID": "PAT-A"}).json() == []
    sops = [i["00080018"]["Value"][0]
            for i in stored.client.get(f"/dicomweb/studies/{uid}/instances").json()]
    assert len(sops) == 5
    picked = stored.client.get("/dicomweb/instances", params={
        "SOPInstanceUID": f"{sops[0]},{sops[3]}", "SOPClassUID": MR_IMAGE}).json()
    assert sorted(i["00080018"]["Value"][0] for i in picked) == sorted([sops[0], sops[3]])
    second = stored.client.get(f"/dicomweb/studies/{uid}/instances",
                               params={"InstanceNumber": "2", "EchoTime": "100"}).json()
    assert len(second) == 2 and all(i["00200013"]["Value"] == [2] for i in second)
    assert stored.client.get("/dicomweb/studies/1.2.3/series").status_code == 404
    assert stored.client.get(f"/dicomweb/studies/{uid}/instances",
                             params={"SeriesDate": "x"}).status_code == 400


def test_forwarded_headers_are_ignored_unless_trusted(stored: Stored) -> None:
    uid = stored.studies["A2023"]
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example",
               "X-Forwarded-Prefix": "/elsewhere"}
    meta = stored.client.get(f"/dicomweb/studies/{uid}/metadata", headers=headers).json()
    assert meta[0]["7FE00010"]["BulkDataURI"].startswith(f"{stored.base}/studies/{uid}/")
    row = stored.client.get("/dicomweb/studies", params={"StudyInstanceUID": uid},
                            headers=headers).json()[0]
    assert row["00081190"]["Value"] == [f"{stored.base}/studies/{uid}"]


@pytest.mark.parametrize("setting, headers, root", [
    ({"public_base_url": "https://pacs.example.org/ai-node/"},
     {"X-Forwarded-Host": "evil.example"}, "https://pacs.example.org/ai-node"),
    ({"trust_forwarded_headers": True},
     {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "viewer.example.org:8443, inner",
      "X-Forwarded-Prefix": "/lumbar/"}, "https://viewer.example.org:8443/lumbar"),
])
def test_links_use_the_public_base_url_or_trusted_proxy_headers(
        tmp_path: Path, setting: dict, headers: dict, root: str) -> None:
    config = _config(tmp_path / "data", **setting)
    uid, files = write_study(tmp_path / "s", roles=("sag_t2",), n=1)
    with _running(config) as (client, node):
        _stow(client, node, files)
        meta = client.get(f"/dicomweb/studies/{uid}/metadata", headers=headers).json()
        uri = meta[0]["7FE00010"]["BulkDataURI"]
        assert uri.startswith(f"{root}/dicomweb/studies/{uid}/series/")
        assert uri.endswith("/frames/1")
        row = client.get("/dicomweb/studies", headers=headers).json()[0]
        assert row["00081190"]["Value"] == [f"{root}/dicomweb/studies/{uid}"]
        # what the viewer then requests reaches the node with the proxy's prefix stripped
        frame = client.get(uri.removeprefix(root))
        assert frame.status_code == 200
        if setting.get("trust_forwarded_headers"):
            bad = client.get("/dicomweb/studies", headers={"X-Forwarded-Host": "a b"})
            assert bad.status_code == 400 and "X-Forwarded-Host" in bad.json()["detail"]


def test_public_base_url_must_be_an_http_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PUBLIC_BASE_URL"):
        load_config(env={"LUMBAR_NODE_PUBLIC_BASE_URL": "pacs.example.org/node"},
                    data_dir=tmp_path)
