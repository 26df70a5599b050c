"""OHIF 3.13.2, served by the node under /viewer/, opens what the node made, in Chromium.

One analysed synthetic study (sources, SR, SEG, key image, KOS) and a second patient's
study are stored in a running node. A radiologist signs in at /ui/login (same origin: the
viewer's DICOMweb requests carry the session cookie, no token in the browser) and:

- the study list filtered by the patient (OHIF sends PatientID as tag 00100020) lists
  that patient's study and no other;
- the SEG loads with every segment;
- the SR hydrates in tracking mode: every one of the 25 findings, on all three series,
  labelled with level, side, finding and grade;
- the key image opens.

OHIF's own hooks are used where its DOM says little: its services on ``window`` (the
measurement, segmentation and viewport services), its console and the network responses.
Missing OHIF fails the test: scripts/bootstrap.sh installs it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from viewerkit import OHIF_DIR, Analysed, analyse, config_for, running_node

from dicom_node.db.session import transaction
from dicom_node.http import auth
from models.reports.sr.content import label_text

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("viewer")]
USER, PASSWORD = "reader", "a long viewer test password"
WAIT_S = 60.0


@pytest.fixture(scope="module")
def served(synth_study, tmp_path_factory) -> Iterator[dict[str, Any]]:
    if not (OHIF_DIR / "index.html").is_file():
        pytest.fail(f"OHIF is missing from {OHIF_DIR}: run scripts/bootstrap.sh")
    root = tmp_path_factory.mktemp("viewer")
    # 224 px: at 128 px the segmentation's OOD gate withdraws the study, as it should
    study = analyse(synth_study(seed=3, matrix=224), root / "results")
    other_dir = synth_study(seed=5, matrix=128)
    other = Analysed(
        study_uid="", patient_id="SYN0005",
        sources=sorted((other_dir / "dicom").rglob("*.dcm")), results={}, findings={})
    assert other.patient_id != study.patient_id
    config = config_for(root / "node")
    with running_node(config, [study, other]) as node:
        with transaction(node.sessions) as session:
            auth.add_user(session, USER, "radiologist", PASSWORD, actor="test")
        yield {"base": f"http://127.0.0.1:{config.http_port}", "study": study}


@pytest.fixture()
def page(served, chromium_browser) -> Iterator[Any]:
    """A signed-in radiologist's page; console messages collected in ``page.logs``."""
    context = chromium_browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.logs = []
    page.on("console", lambda m: page.logs.append(f"{m.type}: {m.text}"))
    page.goto(served["base"] + "/ui/login")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form button[type=submit], form input[type=submit]").first.click()
    page.wait_for_load_state()
    assert any(c["name"] == auth.COOKIE for c in context.cookies()), "sign-in failed"
    yield page
    context.close()


def _wait(page: Any, script: str, done: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(script)
        if done(value):
            return value
        page.wait_for_timeout(500)
    raise AssertionError(f"OHIF did not {what} in {WAIT_S:.0f} s; last value {value!r}; "
                         f"console tail: {page.logs[-15:]}")


def _dismiss(page: Any) -> None:
    for text in ("Skip all", "Confirm and hide"):  # OHIF's tour and its usage notice
        button = page.get_by_text(text)
        if button.count():
            button.first.click()


def _open(page: Any, description: str, confirm: bool) -> None:
    """Double-clicks a series in the study browser; confirms OHIF's prompt to load it."""
    page.get_by_text(description).first.dblclick()
    if confirm:
        page.get_by_role("button", name="Yes").click(timeout=WAIT_S * 1000)


def test_study_list_shows_only_the_patients_studies(served, page):
    study = served["study"]
    with page.expect_response(lambda r: "/dicomweb/studies?" in r.url) as everyone:
        page.goto(served["base"] + "/viewer/")
    assert {_patient(s) for s in everyone.value.json()} == {study.patient_id, "SYN0005"}
    with page.expect_response(
        lambda r: "/dicomweb/studies?" in r.url and study.patient_id in r.url
    ) as filtered:
        page.goto(served["base"] + f"/viewer/?mrn={study.patient_id}")
    url = filtered.value.url
    # the tag-number key, with the wildcards OHIF adds when the source supports them
    assert re.search(rf"(00100020|PatientID)=\*?{study.patient_id}\*?&", url), url
    assert filtered.value.status == 200
    assert [_patient(s) for s in filtered.value.json()] == [study.patient_id]
    page.get_by_text(study.patient_id).first.wait_for()
    assert page.get_by_text("SYN0005").count() == 0


def test_tracking_mode_shows_seg_every_finding_and_the_key_image(served, page):
    study: Analysed = served["study"]
    page.goto(served["base"] + f"/viewer/viewer?StudyInstanceUIDs={study.study_uid}")
    _wait(page, "() => !!window.services && window.services.displaySetService"
          ".getActiveDisplaySets().length", bool, "list the study's series")
    page.wait_for_timeout(2000)
    _dismiss(page)

    seg = pydicom.dcmread(study.results["seg_sag_t2"], stop_before_pixels=True)
    _open(page, "AI lumbar segmentation", confirm=True)
    segments = _wait(
        page, "() => window.services.segmentationService.getSegmentations()"
        ".map(s => Object.values(s.segments).map(x => x.label))",
        lambda v: bool(v) and len(v[0]) >= len(seg.SegmentSequence), "load the SEG")
    assert sorted(segments[0]) == sorted(str(s.SegmentLabel) for s in seg.SegmentSequence)

    _open(page, "AI lumbar stenosis SR", confirm=True)
    measured = _wait(
        page, "() => window.services.measurementService.getMeasurements()"
        ".map(m => [m.label, m.referenceSeriesUID])",
        lambda v: len(v) >= 25, "hydrate the SR findings")
    labels = {label: series for label, series in measured}
    findings = study.findings["findings"]
    expected = {label_text(f): f["roi"]["series_instance_uid"] for f in findings}
    assert len(expected) == 25
    # every finding, each on the series its outline is drawn on (sag T2, sag T1, axial T2)
    assert {k: labels.get(k) for k in expected} == expected
    assert len(set(expected.values())) == 3
    for label in expected:
        assert re.match(r"L\d-(L\d|S1) ((left|right) )?(canal|foramen|subarticular): ", label)
    assert not [m for m in page.logs if "No spatial coordinates group found" in m]
    # the per-level measurement groups draw their first line with OHIF's Length tool
    drawn = {label.split(" ")[0] for label, _ in measured
             if str(label).endswith(" level measurements")}
    assert drawn == {"L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"}
    assert not [m for m in page.logs if "Unable to generate tool state" in m]

    key = pydicom.dcmread(study.results["keyimage"], stop_before_pixels=True)
    _open(page, "AI lumbar key image", confirm=False)
    shown = _wait(
        page, "() => window.services.cornerstoneViewportService.getViewportIds()"
        ".map(id => window.services.cornerstoneViewportService"
        ".getCornerstoneViewport(id)?.getCurrentImageId?.() || '')",
        lambda v: any(str(key.SOPInstanceUID) in i for i in v), "open the key image")
    assert any(i.startswith("wadors:" + served["base"] + "/dicomweb/") for i in shown)


def _patient(item: dict) -> str:
    return item["00100020"]["Value"][0]


def test_ohif_build_is_the_pinned_release():
    assert OHIF_DIR.name == "3.13.2" and (OHIF_DIR / "app-config.js").is_file()
    assert any(Path(OHIF_DIR).glob("app.bundle.*.js"))
