"""QIDO-RS and WADO-RS views of what the node holds, its own results included.

Attributes come from one stored header per study/series plus counts from the index, which
is enough for OHIF's study list and series panel; instance metadata is the full header of
each instance with pixel data given as a BulkDataURI to its frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.models import Instance, Series, Study
from dicom_node.uids import validate_uid

STUDY_TAGS = ("StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
              "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID",
              "StudyDescription", "StudyInstanceUID")
SERIES_TAGS = ("Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID",
               "SeriesDate", "SeriesTime", "BodyPartExamined")
INSTANCE_TAGS = ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
                 "NumberOfFrames", "BitsAllocated")


def _header(path: str) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def _pick(ds: Dataset, keywords: tuple[str, ...]) -> dict[str, Any]:
    out = Dataset()
    for kw in keywords:
        if kw in ds:
            out[kw] = ds[kw]
    return out.to_json_dict()


def _first_instance(session: Session, series_id: int) -> Instance | None:
    return session.scalar(select(Instance).where(Instance.series_id == series_id)
                          .order_by(Instance.instance_number, Instance.id).limit(1))


def search_studies(session: Session, params: dict[str, str]) -> list[dict]:
    try:
        limit = min(int(params.get("limit", 200)), 1000)
        offset = int(params.get("offset", 0))
    except ValueError:
        raise ValueError(f"limit/offset must be integers, got {params!r}") from None
    if limit < 1 or offset < 0:
        raise ValueError(f"limit must be >= 1 and offset >= 0, got {limit}, {offset}")
    stmt = select(Study).order_by(Study.last_received_at.desc(), Study.id.desc())
    stmt = stmt.limit(limit).offset(offset)
    if params.get("StudyInstanceUID"):
        stmt = stmt.where(Study.study_instance_uid == validate_uid(
            params["StudyInstanceUID"], "StudyInstanceUID"))
    if params.get("PatientID"):
        stmt = stmt.where(Study.patient_id == params["PatientID"])
    if params.get("AccessionNumber"):
        stmt = stmt.where(Study.accession_number == params["AccessionNumber"])
    results = []
    for study in session.scalars(stmt):
        series = list(session.scalars(select(Series).where(Series.study_id == study.id)))
        if not series:
            continue
        first = _first_instance(session, series[0].id)
        item = _pick(_header(first.path), STUDY_TAGS) if first else {}
        mods = Dataset()
        mods.ModalitiesInStudy = sorted({s.modality for s in series if s.modality})
        mods.NumberOfStudyRelatedSeries = len(series)
        mods.NumberOfStudyRelatedInstances = sum(s.instance_count for s in series)
        mods.StudyInstanceUID = study.study_instance_uid
        item.update(mods.to_json_dict())
        results.append(item)
    return results


def study_or_404(session: Session, study_uid: str) -> Study | None:
    return session.scalar(select(Study).where(
        Study.study_instance_uid == validate_uid(study_uid, "StudyInstanceUID")))


def search_series(session: Session, study: Study) -> list[dict]:
    results = []
    for series in session.scalars(select(Series).where(Series.study_id == study.id)
                                  .order_by(Series.series_number, Series.id)):
        first = _first_instance(session, series.id)
        item = _pick(_header(first.path), SERIES_TAGS) if first else {}
        extra = Dataset()
        extra.SeriesInstanceUID = series.series_instance_uid
        extra.NumberOfSeriesRelatedInstances = series.instance_count
        item.update(extra.to_json_dict())
        results.append(item)
    return results


def instances(session: Session, study: Study, series_uid: str | None = None,
              sop_uid: str | None = None) -> list[Instance]:
    stmt = (select(Instance).join(Series, Series.id == Instance.series_id)
            .where(Series.study_id == study.id).order_by(Series.id, Instance.instance_number,
                                                         Instance.id))
    if series_uid:
        stmt = stmt.where(Series.series_instance_uid == validate_uid(series_uid,
                                                                    "SeriesInstanceUID"))
    if sop_uid:
        stmt = stmt.where(Instance.sop_instance_uid == validate_uid(sop_uid, "SOPInstanceUID"))
    return list(session.scalars(stmt))


def search_instances(session: Session, study: Study, series_uid: str) -> list[dict]:
    out = []
    for inst in instances(session, study, series_uid):
        item = _pick(_header(inst.path), INSTANCE_TAGS)
        item.update(_pick(_header(inst.path), ("StudyInstanceUID", "SeriesInstanceUID")))
        out.append(item)
    return out


def metadata(rows: list[Instance], base_url: str) -> list[dict]:
    """Full headers; pixel data as a BulkDataURI to the instance's frames."""
    out = []
    for inst in rows:
        ds = pydicom.dcmread(inst.path, force=True)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        has_pixels = "PixelData" in ds
        if has_pixels:
            del ds.PixelData
        item = ds.to_json_dict(bulk_data_threshold=1 << 30)  # all inline but the pixels
        if has_pixels:
            uri = (f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                   f"/instances/{ds.SOPInstanceUID}/frames/"
                   + ",".join(str(i + 1) for i in range(frames)))
            item["7FE00010"] = {"vr": "OW", "BulkDataURI": uri}
        out.append(item)
    return out


def frames(inst: Instance, numbers: list[int]) -> tuple[list[bytes], str]:
    """Raw frames of an instance and their media type (native or the stored encapsulation)."""
    ds = pydicom.dcmread(inst.path, force=True)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad:
        raise ValueError(f"frame numbers {bad} outside 1..{count}")
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed:
        from pydicom.encaps import generate_frames

        all_frames = list(generate_frames(ds.PixelData, number_of_frames=count))
        media = f"application/octet-stream; transfer-syntax={syntax}"
        return [all_frames[n - 1] for n in numbers], media
    size = len(ds.PixelData) // count
    return [ds.PixelData[(n - 1) * size:n * size] for n in numbers], "application/octet-stream"


def read_bytes(rows: list[Instance]) -> list[bytes]:
    return [Path(inst.path).read_bytes() for inst in rows]
