"""The whole loop with a real PACS: a synthetic lumbar MR stored into Orthanc comes back to
Orthanc as an SR, a SEG, a key image and a KOS, exactly once, and is never analysed twice.

Orthanc (shipped orthanc.json + autoroute.lua) routes the stable study to `lumbar-node serve`;
`lumbar-node worker` (Celery on Redis, PostgreSQL) runs the pipeline with the shipped weights
and C-STOREs the results to Orthanc's DICOM port. The test then reads what a viewer would:
QIDO-RS and WADO-RS from Orthanc's DICOMweb plugin. The results make the study unstable again;
when it settles the routing script must skip it, and the node must hold one job for it.

The other deploy tests check the halves (routing to a storescp, delivery of a hand-made SR);
only this one closes the circle with the model in it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from _harness import wait_for
from orthanc import orthanc_binary
from pacs_stack import PacsLoop, aware, pacs_loop, qido_instances, store_jobs, tag
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    ComprehensiveSRStorage,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)
from sqlalchemy import select

from dicom_node.db.models import AuditEvent, Delivery, Finding, Job, ResultObject, Study
from lumbar_common.vocabulary import LEVELS
from models.reports.sr.viewers import readable_tracking


def _missing() -> str | None:
    if orthanc_binary() is None:
        return "Orthanc is not installed"
    try:
        from models.registry import load_card

        load_card("segmentation")
    except (KeyError, FileNotFoundError, ValueError) as exc:
        return f"no registered segmentation model: {exc}"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pacs_loop"),
              pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]

#: seed and matrix for which the shipped weights give a complete result (every one of the 25
#: findings assessable, all 12 structures segmented). At 128 px (2 mm pixels, coarser than any
#: clinical sagittal T2) the segmentation's out-of-distribution gate rightly withdraws the
#: study; 224 px is the smallest size the gate's thresholds were fitted on.
SEED, MATRIX = 3, 224
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
#: result series by the modality QIDO-RS finds them under, with their SOP classes
RESULT_MODALITIES = {
    "SR": {COMPREHENSIVE_3D_SR, str(ComprehensiveSRStorage)},
    "SEG": {str(SegmentationStorage)},
    "OT": {str(SecondaryCaptureImageStorage)},
    "KO": {str(KeyObjectSelectionDocumentStorage)},
}
#: the lumbar structures every lumbar study shows (thoracic ones in view come on top)
SEGMENTS = [*(f"L{n} vertebra" for n in range(1, 6)), "Sacrum",
            *(f"{level.replace('-', '/')} disc" for level in LEVELS), "Spinal canal"]
SHORT = {"spinal_canal_stenosis": "canal", "neural_foraminal_narrowing": "foramen",
         "subarticular_stenosis": "subarticular"}


def expected_groups() -> set[str]:
    """Where each of the 25 SR groups is: 5 levels × canal, foramina and subarticular zones."""
    sites = {f"{level} canal" for level in LEVELS}
    sites |= {f"{level} {side} {short}" for level in LEVELS for side in ("left", "right")
              for short in ("foramen", "subarticular")}
    return sites


def measurement_groups(item: Dataset) -> list[str]:
    """Tracking identifiers of every TID 1501 Measurement Group (DCM 125007) under `item`."""
    found = []
    for child in item.get("ContentSequence", []):
        name = child.get("ConceptNameCodeSequence")
        if child.ValueType == "CONTAINER" and name and name[0].CodeValue == "125007":
            found += [readable_tracking(str(c.TextValue)) for c in child.ContentSequence
                      if c.ValueType == "TEXT" and c.ConceptNameCodeSequence[0].CodeValue
                      == "112039"]  # Tracking Identifier
        else:
            found += measurement_groups(child)
    return found


def delivered_job(loop: PacsLoop, uid: str) -> Callable[[], Job | None]:
    """The study's live job once its delivery to Orthanc is acknowledged."""

    def probe() -> Job | None:
        with loop.stack.sessions() as session:
            study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
            job = study and session.scalar(select(Job).where(
                Job.study_id == study.id, Job.superseded_by.is_(None)))
            if job is None:
                return None
            if job.state == "failed":
                raise AssertionError(f"job failed: {job.reason}")
            delivery = session.scalar(select(Delivery).where(Delivery.job_id == job.id))
            if delivery is not None and delivery.status == "dead":
                raise AssertionError(f"delivery dead: {delivery.last_error}")
            return job if delivery is not None and delivery.status == "delivered" else None

    return probe


def results_in_orthanc(loop: PacsLoop, uid: str) -> Callable[[], dict[str, list] | None]:
    def probe() -> dict[str, list] | None:
        found = {m: loop.pacs.qido_series(uid, Modality=m) for m in RESULT_MODALITIES}
        return found if all(found.values()) else None

    return probe


def retrieve(loop: PacsLoop, uid: str, series: dict[str, Any]) -> list[Dataset]:
    parts = loop.pacs.wado_series(uid, tag(series, "0020000E"))
    return [pydicom.dcmread(DicomBytesIO(part)) for part in parts]


def stage_rows(loop: PacsLoop, uid: str) -> dict[str, float]:
    """Seconds per stage as the node recorded them: receive (Orthanc's store job, first to
    last instance), settle, queue, the pipeline's own stages (jobs.stage_timings), record and
    deliver; total is last instance in to results acknowledged by Orthanc."""
    with loop.stack.sessions() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
        job = session.scalar(select(Job).where(Job.study_id == study.id))
        delivered_at = session.scalar(
            select(Delivery.delivered_at).where(Delivery.job_id == job.id))
        moments = [aware(m) for m in (study.first_received_at, study.last_received_at,
                                      study.closed_at, job.created_at, job.started_at,
                                      job.finished_at, delivered_at)]
        pipeline = {k: float(v) for k, v in (job.stage_timings or {}).items()
                    if isinstance(v, int | float)}
    assert all(moments), f"a stage never ended: {moments}"
    first_in, last_in, closed, created, started, finished, delivered = (m for m in moments if m)
    rows = {"receive": (last_in - first_in).total_seconds(),
            "settle": (closed - last_in).total_seconds(),
            "queue": (started - created).total_seconds(), **pipeline,
            "record": (finished - started).total_seconds() - sum(pipeline.values()),
            "deliver": (delivered - finished).total_seconds(),
            "total": (delivered - last_in).total_seconds()}
    return {k: round(v, 2) for k, v in rows.items()}


def test_study_from_orthanc_comes_back_analysed_once(synth_study, tmp_path: Path) -> None:
    folder = synth_study(seed=SEED, matrix=MATRIX)
    truth = json.loads((folder / "truth.json").read_text())
    uid = truth["study_instance_uid"]
    files = sorted((folder / "dicom").rglob("*.dcm"))
    sag_t2 = truth["series"]["sag_t2"]
    timeline: dict[str, float] = {}

    with pacs_loop(tmp_path) as loop:
        t0 = time.monotonic()
        loop.pacs.upload(files)
        timeline["uploaded"] = time.monotonic() - t0
        loop.pacs.wait_routed(uid, f"({len(truth['series'])} series) sent to lumbarnode",
                              timeout=60)
        timeline["routed"] = time.monotonic() - t0
        job = wait_for(delivered_job(loop, uid), 300, "results delivered to Orthanc", 0.3)
        timeline["delivered"] = time.monotonic() - t0
        found = wait_for(results_in_orthanc(loop, uid), 30, "results found over QIDO-RS")
        timeline["found over QIDO-RS"] = time.monotonic() - t0
        # the results made the study unstable; once stable again it must not be routed again
        study_id = loop.pacs.study_id(uid)
        loop.pacs.wait_for_log(f"study {study_id} already routed, skipped", timeout=60)
        timeline["re-stable, skipped"] = time.monotonic() - t0

        results = {m: retrieve(loop, uid, s[0]) for m, s in found.items() if len(s) == 1}
        series_count = {m: len(s) for m, s in found.items()}
        mr_series = loop.pacs.qido_series(uid, Modality="MR")
        studies = loop.pacs.qido_studies(StudyInstanceUID=uid)
        instances = qido_instances(loop.pacs, uid)
        jobs_in_pacs = store_jobs(loop.pacs)
        stages = stage_rows(loop, uid)
        with loop.stack.sessions() as session:
            study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
            jobs = session.scalars(select(Job).where(Job.study_id == study.id)).all()
            deliveries = session.scalars(select(Delivery).where(Delivery.job_id == job.id)).all()
            objects = {o.kind: o for o in session.scalars(
                select(ResultObject).where(ResultObject.job_id == job.id))}
            findings = session.scalars(select(Finding).where(Finding.job_id == job.id)).all()
            story = session.scalars(select(AuditEvent).where(
                AuditEvent.study_instance_uid == uid).order_by(AuditEvent.id)).all()
        destination = loop.destination_label
    timeline = {k: round(v, 2) for k, v in timeline.items()}
    print(f"\npacs loop (s after upload start): {json.dumps(timeline)}\n"
          f"node stages (s): {json.dumps(stages)}")

    # the node: one analysis, complete, delivered once to Orthanc
    assert [(j.state, j.superseded_by, j.attempts) for j in jobs] == [("done", None, 1)]
    assert job.result_status == "complete", job.reason
    assert study.state == "processed" and study.calling_ae == loop.pacs.aet
    assert [(d.destination, d.status, d.attempts) for d in deliveries] == [
        (destination, "delivered", 1)]
    assert len(findings) == 25 and all(f.assessable for f in findings)
    events = [e.event_type for e in story]
    stored_from = [e.detail.get("source") for e in story if e.event_type == "instance.stored"]
    assert stored_from.count("dimse") == len(files)  # Orthanc's store job, nothing more
    assert stored_from.count("result") == 4
    for once in ("study.first_instance", "study.closed", "job.started", "job.finished",
                 "delivery.sent"):
        assert events.count(once) == 1, (once, events)
    assert not {"study.reopened", "job.requeued", "job.superseded", "delivery.failed"} & set(
        events)
    assert events.index("study.closed") < events.index("job.started") < events.index(
        "job.finished") < events.index("delivery.sent")
    (sent,) = [e for e in story if e.event_type == "delivery.sent"]
    assert sent.detail["destination"] == destination and sent.detail["objects"] == 4

    # Orthanc: routed once; the study holds the sources and each result exactly once
    assert [(j["State"], j["Content"].get("RemoteAet")) for j in jobs_in_pacs] == [
        ("Success", loop.stack.config.ae_title)]
    assert len(studies) == 1
    assert set(RESULT_MODALITIES) | {"MR"} == set(studies[0]["00080061"]["Value"])
    assert len(mr_series) == len(truth["series"])
    assert series_count == dict.fromkeys(RESULT_MODALITIES, 1)
    assert len(instances) == len(files) + 4
    assert {m: len(r) for m, r in results.items()} == dict.fromkeys(RESULT_MODALITIES, 1)
    by_kind = {"SR": "sr", "SEG": "seg_sag_t2", "OT": "keyimage", "KO": "ko"}
    for modality, (ds,) in results.items():
        assert str(ds.SOPClassUID) in RESULT_MODALITIES[modality]
        assert ds.SOPInstanceUID == objects[by_kind[modality]].sop_instance_uid
        assert ds.StudyInstanceUID == uid and ds.PatientID == truth["patient"]["id"]
        assert ds.Manufacturer == "lumbar-node" and ds.SeriesDescription.startswith("AI lumbar")

    # SR: 25 finding groups, each a site the node graded, with the grade the node recorded
    # (and its review mark), then one measurement group per level and one group per disc
    groups = measurement_groups(results["SR"][0])
    sites = [g for g in groups if g.split(":")[0] in expected_groups()]
    assert len(sites) == 25 and {g.split(":")[0] for g in sites} == expected_groups()
    graded = {f"{f.level} {f.side + ' ' if f.side else ''}{SHORT[f.condition]}: "
              f"{f.grade.lower()}" for f in findings}
    assert {g.split(" [review")[0] for g in sites} == graded
    assert len([g for g in groups if g.split(":")[0].endswith(" disc")]) == len(LEVELS)
    assert len(groups) == 25 + 2 * len(LEVELS)

    # SEG: every structure, on the sagittal T2 it was computed from
    (seg,) = results["SEG"]
    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    assert [x for x in labels if x in SEGMENTS] == SEGMENTS
    assert all(x in SEGMENTS or x.startswith("T") for x in labels), labels
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == sag_t2["series_instance_uid"]
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} == set(
        sag_t2["sop_instance_uids"])
    assert seg.FrameOfReferenceUID == truth["frame_of_reference_uid"]

    # key image, and the KOS that flags it
    (key_image,) = results["OT"]
    assert key_image.Rows > 0 and key_image.SamplesPerPixel == 3
    flagged = {str(sop.ReferencedSOPInstanceUID)
               for study_item in results["KO"][0].CurrentRequestedProcedureEvidenceSequence
               for series in study_item.ReferencedSeriesSequence
               for sop in series.ReferencedSOPSequence}
    assert key_image.SOPInstanceUID in flagged
