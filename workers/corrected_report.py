"""A corrected SR from radiologists' reviews: the database side around `build_sr`.

Delivered objects are never changed. A correction becomes a new SR version: the stored
findings.json of the analysis with each finding's latest review applied (a corrected grade
is attributed to the radiologist, with the node's grade kept as the second opinion; so is a
corrected disc finding: Pfirrmann grade, Modic type or present/absent), built
by the same `build_sr` as the original and naming every earlier version in its Predecessor
Documents Sequence. It is recorded as a job of its own (state done, never claimed by the
analysis path) holding the new SR and the analysis's SEG, key image and KOS, and delivered
through the outbox like any result, so `resend` afterwards sends the corrected set.

Idempotent: a report version already built or failed is left alone, and the build is
recorded under a row lock, so a redelivered message cannot deliver the version twice.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit
from dicom_node.config import NodeConfig
from dicom_node.db.models import (
    Instance,
    Job,
    ReportVersion,
    ResultObject,
    Review,
    Series,
    Study,
    utcnow,
)
from dicom_node.db.session import for_update
from dicom_node.delivery.service import create_deliveries
from dicom_node.ingest import IngestError, Ingestor
from dicom_node.review_data import (
    DISC_BINARY,
    DISC_GRADED,
    DISC_LABELS,
    disc_key,
    latest_reviews,
    load_findings,
)
from lumbar_common.vocabulary import rsna_key
from workers.processing import file_sha256

log = logging.getLogger(__name__)
CORRECTED_SERIES_NUMBER = 9005
CORRECTED_DESCRIPTION = "AI lumbar stenosis SR (corrected)"


def apply_reviews(document: dict[str, Any], reviews: dict[str, Review]) -> dict[str, Any]:
    """findings.json with the latest review of each finding applied (a new dict)."""
    out = copy.deepcopy(document)
    for f in out.get("findings") or []:
        review = reviews.get(rsna_key(f["condition"], f.get("side"), f["level"]))
        if review is None:
            continue
        note = f" ({review.comment})" if review.comment else ""
        if review.verdict == "confirm":
            f["review"] = {"required": False,
                           "reasons": [f"confirmed by radiologist {review.reviewer}{note}"]}
            continue
        f["second_opinion"] = {
            "grader": f.get("grader") or "node", "grader_kind": f.get("grader_kind"),
            "grade": f.get("grade"), "probabilities": f.get("probabilities"),
            "model_version": f.get("model_version"),
            **({} if f.get("assessable") else {"withdrawn": f.get("reason") or "Undetermined"})}
        f.update(grade=review.corrected_value, assessable=True, reason=None, probabilities=None,
                 grader="radiologist", grader_kind=f"radiologist review by {review.reviewer}",
                 training_data=None, model_version=f"review-{review.id}", disagreement=None,
                 review={"required": False, "reasons": [
                     f"corrected by radiologist {review.reviewer}{note}"]})
        f.pop("explanation", None)
        f.pop("lss_probabilities", None)
    for disc in out.get("disc_findings") or []:
        apply_disc_reviews(disc, reviews)
    out["review_required"] = sum(bool((f.get("review") or {}).get("required"))
                                 for f in out.get("findings") or [])
    return out


def apply_disc_reviews(disc: dict[str, Any], reviews: dict[str, Review]) -> None:
    """One `disc_findings` entry with its findings' reviews applied, in place.

    A corrected Pfirrmann grade, Modic type or present/absent finding takes the
    radiologist's value, credited to grader "radiologist" (the node's value and
    probabilities kept as its second opinion; the node's probabilities leave the finding,
    they were not about the radiologist's value). An Undetermined disc becomes assessable
    once the radiologist has given both its Pfirrmann grade and its Modic type, the two
    values every assessed disc carries."""
    level = str(disc.get("level"))
    assessable = bool(disc.get("assessable"))
    notes = []
    for name in (*DISC_GRADED, *DISC_BINARY):
        review = reviews.get(disc_key(name, level))
        if review is None:
            continue
        note = f" ({review.comment})" if review.comment else ""
        item = dict(disc[name]) if isinstance(disc.get(name), dict) else {}
        label = DISC_LABELS.get(name, name.replace("_", " "))
        if review.verdict == "confirm":
            if item:
                item["review"] = {"required": False, "reasons": [
                    f"confirmed by radiologist {review.reviewer}{note}"]}
                disc[name] = item
                notes.append(f"{label} confirmed by radiologist {review.reviewer}{note}")
            continue
        value = str(review.corrected_value)
        if name in DISC_GRADED:
            attribute = DISC_GRADED[name][0]
            node = {attribute: item.get(attribute), "probabilities": item.get("probabilities")}
            corrected: dict[str, Any] = {attribute: int(value), "probabilities": None}
        else:
            node = {"present": item.get("present"), "probability": item.get("probability")}
            corrected = {"present": value == "present", "probability": None}
        corrected.update(
            grader="radiologist", grader_kind=f"radiologist review by {review.reviewer}",
            model_version=f"review-{review.id}",
            second_opinion={"grader": "disc", "model_version": disc.get("model_version"),
                            **node, **({} if assessable else {
                                "withdrawn": disc.get("reason") or "Undetermined"})},
            review={"required": False, "reasons": [
                f"corrected by radiologist {review.reviewer}{note}"]})
        disc[name] = corrected
        notes.append(f"{label} corrected by radiologist {review.reviewer}{note}")
    if not assessable and all((disc.get(name) or {}).get("grader") == "radiologist"
                              for name in DISC_GRADED):
        disc.update(assessable=True, reason=None,
                    withdrawn=disc.get("reason") or "Undetermined")
    if notes:
        disc["review"] = {"required": False, "reasons": notes}


def _sources(session: Session, study: Study) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Source instances of the study: SOP UID -> file, and series UID -> files."""
    by_sop: dict[str, Path] = {}
    by_series: dict[str, list[Path]] = defaultdict(list)
    for sop, path, series in session.execute(
            select(Instance.sop_instance_uid, Instance.path, Series.series_instance_uid)
            .join(Series, Series.id == Instance.series_id)
            .where(Series.study_id == study.id, Series.is_result.is_(False),
                   Instance.source != "result").order_by(Instance.id)):
        by_sop[sop] = Path(path)
        by_series[series].append(Path(path))
    return by_sop, by_series


def build_corrected_report(sessions: sessionmaker[Session], config: NodeConfig,
                           version_id: int, worker_name: str = "") -> str:
    """Build, store and queue for delivery one ReportVersion; returns its final state."""
    with sessions() as session:
        version = session.get(ReportVersion, version_id)
        if version is None:
            raise ValueError(f"no report version {version_id}")
        if version.state != "queued":
            return version.state
        job = session.get(Job, version.analysis_job_id)
        study = session.get(Study, job.study_id)
        document = load_findings(session, job)
        reviews = {key: r for (_j, key), r in latest_reviews(session, [job.id]).items()}
        previous = [Path(p) for p in session.scalars(
            select(ResultObject.path).where(ResultObject.job_id == job.id,
                                            ResultObject.kind == "sr"))]
        for built in session.scalars(select(ReportVersion).where(
                ReportVersion.analysis_job_id == job.id, ReportVersion.state == "built",
                ReportVersion.id < version_id).order_by(ReportVersion.id)):
            previous += [Path(p) for p in session.scalars(select(ResultObject.path).where(
                ResultObject.job_id == built.job_id, ResultObject.kind == "sr"))]
        carried = list(session.scalars(select(ResultObject).where(
            ResultObject.job_id == job.id, ResultObject.kind.not_in(("sr", "findings")),
            ResultObject.sop_instance_uid.is_not(None))))
        by_sop, by_series = _sources(session, study)
        study_uid = study.study_instance_uid
    try:
        if document is None:
            raise ValueError("the analysis has no findings.json")
        corrected = apply_reviews(document, reviews)
        out = Path(job.output_dir or config.results_dir) / f"report-v{version_id}"
        segs = [Path(o.path) for o in carried if o.kind.startswith("seg")]
        sr_path = _write_sr(corrected, by_sop, by_series, previous, segs, out, study_uid,
                            job.id, version_id)
        (out / "findings.json").write_text(_json(corrected))
    except Exception as exc:  # a bad build is recorded, never retried into a loop
        with sessions() as session, session.begin():
            version = session.get(ReportVersion, version_id)
            if version.state == "queued":
                version.state, version.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
                audit.record(session, "report.correction_failed", study_uid=study_uid,
                             actor=worker_name, report_version_id=version_id,
                             error=version.error)
        log.exception("corrected report %s failed", version_id)
        return "failed"
    try:
        Ingestor(config, sessions).store(sr_path.read_bytes(), source="result")
    except IngestError as exc:
        log.error("corrected SR of version %s not indexed: %s", version_id, exc.reason)
    return _record(sessions, config, version_id, sr_path, out / "findings.json", carried,
                   worker_name)


def _write_sr(findings: dict[str, Any], by_sop: dict[str, Path],
              by_series: dict[str, list[Path]], previous: list[Path], seg_paths: list[Path],
              out: Path, study_uid: str, job_id: int, version_id: int) -> Path:
    from models.reports.equipment import contributing_equipment
    from models.reports.sr import build_sr
    from models.reports.writer import SourceHeaders, save_dataset
    from models.volume import assemble_series

    volumes = []
    for entry in findings.get("series") or []:
        uid = entry.get("series_instance_uid")
        if entry.get("used") and uid in by_series:
            volumes += assemble_series(by_series[uid], str(entry.get("role") or "")).volumes
    segs = [pydicom.dcmread(p) for p in seg_paths]
    sr = build_sr(
        findings, volumes, SourceHeaders(by_sop), segs=segs,
        series_instance_uid=generate_uid(entropy_srcs=[study_uid, "corrected-sr", str(job_id)]),
        sop_instance_uid=generate_uid(entropy_srcs=[study_uid, "corrected-sr",
                                                    str(job_id), str(version_id)]),
        series_number=CORRECTED_SERIES_NUMBER,
        contributing_equipment=contributing_equipment(findings.get("models") or {}, study_uid),
        previous_versions=[pydicom.dcmread(p, stop_before_pixels=True) for p in previous])
    sr.SeriesDescription = CORRECTED_DESCRIPTION
    out.mkdir(parents=True, exist_ok=True)
    return save_dataset(sr, out / "sr.dcm")


def _record(sessions: sessionmaker[Session], config: NodeConfig, version_id: int,
            sr_path: Path, findings_path: Path, carried: list[ResultObject],
            worker_name: str) -> str:
    ds = pydicom.dcmread(sr_path, stop_before_pixels=True)
    with sessions() as session, session.begin():
        version = session.scalar(for_update(session, select(ReportVersion).where(
            ReportVersion.id == version_id)).execution_options(populate_existing=True))
        if version.state != "queued":  # another delivery of the message got here first
            return version.state
        analysis = session.get(Job, version.analysis_job_id)
        study = session.get(Study, analysis.study_id)
        now = utcnow()
        job = Job(study_id=study.id, state="done", attempts=1, instance_count=0,
                  created_at=now, started_at=now, finished_at=now, worker=worker_name[:128],
                  result_status=analysis.result_status, model_versions=analysis.model_versions,
                  reason=f"corrected report {version_id} of job {analysis.id}",
                  output_dir=str(sr_path.parent))
        session.add(job)
        session.flush()
        session.add(ResultObject(job_id=job.id, kind="sr", sop_class_uid=str(ds.SOPClassUID),
                                 sop_instance_uid=str(ds.SOPInstanceUID),
                                 series_instance_uid=str(ds.SeriesInstanceUID),
                                 path=str(sr_path), sha256=file_sha256(sr_path)))
        session.add(ResultObject(job_id=job.id, kind="findings", path=str(findings_path),
                                 sha256=file_sha256(findings_path)))
        for obj in carried:  # the unchanged SEG, key image and KOS travel with it
            session.add(ResultObject(job_id=job.id, kind=obj.kind,
                                     sop_class_uid=obj.sop_class_uid,
                                     sop_instance_uid=obj.sop_instance_uid,
                                     series_instance_uid=obj.series_instance_uid,
                                     path=obj.path, sha256=obj.sha256))
        version.state, version.job_id, version.built_at = "built", job.id, now
        version.sop_instance_uid = str(ds.SOPInstanceUID)
        audit.record(session, "report.corrected_built", study_uid=study.study_instance_uid,
                     patient_id=study.patient_id, actor=worker_name,
                     report_version_id=version_id, job_id=job.id,
                     sop_instance_uid=version.sop_instance_uid,
                     supersedes=version.supersedes_sop_instance_uid,
                     requested_by=version.requested_by)
        create_deliveries(session, config, job, study)
    return "built"


def _json(document: dict[str, Any]) -> str:
    import json

    return json.dumps(document, indent=2, default=str)
