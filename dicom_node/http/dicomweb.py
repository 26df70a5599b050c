"""QIDO-RS and WADO-RS views of what the node holds, its own results included.

A study or series is described by the stored header of its first instance plus counts from
the index; an instance by its own header. The index has columns for only a few attributes
(UIDs, PatientID, AccessionNumber, Modality), so literal keys on those narrow the rows in
SQL and every key is then matched on the header itself (`qido`): the answer is what the
stored data says, not what a column happened to hold. Instance metadata is the full header
of each instance with pixel data given as a BulkDataURI to its frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from dicom_node.db.models import Instance, Series, Study
from dicom_node.http import qido
from dicom_node.uids import validate_uid

#: candidate rows read from the database at a time while matching in Python
CHUNK = 500


@dataclass
class Page:
    """One page of matches; `more` when further matches lie beyond it."""

    items: list[dict[str, Any]]
    more: bool


@lru_cache(maxsize=2048)
def _cached_header(path: str, _mtime_ns: int, _size: int) -> dict[str, Any]:
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return ds.to_json_dict(bulk_data_threshold=1 << 30, suppress_invalid_tags=True)


def header(path: str) -> dict[str, Any]:
    """The stored header as DICOM JSON, pixels left out. Cached by path, size and mtime:
    a query that filters on names or dates reads one header per candidate, and stored
    files are never rewritten in place. Callers must not mutate the result."""
    stat = Path(path).stat()
    return _cached_header(path, stat.st_mtime_ns, stat.st_size)


def _el(keyword: str, *items: Any) -> tuple[str, dict[str, Any]]:
    tag = tag_for_keyword(keyword)
    element: dict[str, Any] = {"vr": dictionary_VR(tag)}
    if items:
        element["Value"] = list(items)
    return f"{tag:08X}", element


def _chunks(session: Session, stmt: Select) -> Iterator[Any]:
    """Rows of `stmt` a chunk at a time, so a search that stops early reads little."""
    offset = 0
    while True:
        rows = list(session.execute(stmt.limit(CHUNK).offset(offset)))
        yield from rows
        if len(rows) < CHUNK:
            return
        offset += CHUNK


def _page(records: Iterable[dict[str, Any]], query: qido.Query,
          defaults: tuple[str, ...]) -> Page:
    items: list[dict[str, Any]] = []
    skipped = 0
    level_all = qido.level_all(query.level)
    for record in records:
        if not query.matches(record):
            continue
        if skipped < query.offset:
            skipped += 1
        elif len(items) == query.limit:
            return Page(items, True)
        else:
            items.append(query.project(record, defaults, level_all))
    return Page(items, False)


def _where(stmt: Select, column: Any, wanted: list[str] | None) -> Select:
    return stmt if wanted is None else stmt.where(column.in_(wanted))


def _study_filters(stmt: Select, query: qido.Query) -> Select:
    """Literal keys narrowed in SQL first; the header is matched again in Python."""
    stmt = _where(stmt, Study.study_instance_uid, query.exact("StudyInstanceUID"))
    stmt = _where(stmt, Study.patient_id, query.exact("PatientID"))
    return _where(stmt, Study.accession_number, query.exact("AccessionNumber"))


class _Modalities:
    """ModalitiesInStudy per study, from the series index (results included)."""

    def __init__(self, session: Session) -> None:
        self.session, self.known = session, dict[int, list[str]]()

    def __call__(self, study_id: int) -> list[str]:
        if study_id not in self.known:
            self.known[study_id] = sorted({m for m in self.session.scalars(
                select(Series.modality).where(Series.study_id == study_id)) if m})
        return self.known[study_id]


def _first_instance(session: Session, **where: int) -> Instance | None:
    stmt = select(Instance).join(Series, Series.id == Instance.series_id)
    if "study_id" in where:
        stmt = stmt.where(Series.study_id == where["study_id"])
    if "series_id" in where:
        stmt = stmt.where(Instance.series_id == where["series_id"])
    return session.scalar(stmt.order_by(Series.id, Instance.instance_number, Instance.id)
                          .limit(1))


def search_studies(session: Session, query: qido.Query, base: str) -> Page:
    """Study records: the header of the study's first instance (first series received),
    counts and ModalitiesInStudy from the index."""
    stmt = _study_filters(select(Study), query).order_by(Study.last_received_at.desc(),
                                                         Study.id.desc())

    def records() -> Iterator[dict[str, Any]]:
        for (study,) in _chunks(session, stmt):
            rows = list(session.execute(select(Series.modality, Series.instance_count)
                                        .where(Series.study_id == study.id)))
            first = _first_instance(session, study_id=study.id)
            if first is None:
                continue
            uid = study.study_instance_uid
            yield {**header(first.path), **dict((
                _el("StudyInstanceUID", uid),
                _el("ModalitiesInStudy", *sorted({m for m, _ in rows if m})),
                _el("NumberOfStudyRelatedSeries", len(rows)),
                _el("NumberOfStudyRelatedInstances", sum(n for _, n in rows)),
                _el("InstanceAvailability", "ONLINE"),
                _el("RetrieveURL", f"{base}/studies/{uid}")))}
    return _page(records(), query, qido.STUDY_RETURN)


def study_or_404(session: Session, study_uid: str) -> Study | None:
    return session.scalar(select(Study).where(
        Study.study_instance_uid == validate_uid(study_uid, "StudyInstanceUID")))


def search_series(session: Session, query: qido.Query, base: str,
                  study: Study | None = None) -> Page:
    """Series records: the series' first instance header plus counts; all studies when
    `study` is None (``/series``)."""
    stmt = _study_filters(select(Series, Study).join(Study, Study.id == Series.study_id),
                          query)
    stmt = _where(stmt, Series.series_instance_uid, query.exact("SeriesInstanceUID"))
    stmt = _where(stmt, Series.modality, query.exact("Modality"))
    if study is not None:
        stmt = stmt.where(Series.study_id == study.id)
    stmt = stmt.order_by(Study.last_received_at.desc(), Study.id.desc(), Series.series_number,
                         Series.id)
    modalities = _Modalities(session)

    def records() -> Iterator[dict[str, Any]]:
        for series, st in _chunks(session, stmt):
            first = _first_instance(session, series_id=series.id)
            if first is None:
                continue
            uid, suid = st.study_instance_uid, series.series_instance_uid
            yield {**header(first.path), **dict((
                _el("StudyInstanceUID", uid), _el("SeriesInstanceUID", suid),
                _el("ModalitiesInStudy", *modalities(st.id)),
                _el("NumberOfSeriesRelatedInstances", series.instance_count),
                _el("InstanceAvailability", "ONLINE"),
                _el("RetrieveURL", f"{base}/studies/{uid}/series/{suid}")))}
    return _page(records(), query, qido.SERIES_RETURN)


def search_instances(session: Session, query: qido.Query, base: str,
                     study: Study | None = None, series_uid: str | None = None) -> Page:
    """Instance records: each instance's own header; every attribute in it can match."""
    stmt = _study_filters(select(Instance, Series, Study)
                          .join(Series, Series.id == Instance.series_id)
                          .join(Study, Study.id == Series.study_id), query)
    stmt = _where(stmt, Series.series_instance_uid, query.exact("SeriesInstanceUID"))
    stmt = _where(stmt, Instance.sop_instance_uid, query.exact("SOPInstanceUID"))
    stmt = _where(stmt, Instance.sop_class_uid, query.exact("SOPClassUID"))
    if study is not None:
        stmt = stmt.where(Series.study_id == study.id)
    if series_uid is not None:
        stmt = stmt.where(Series.series_instance_uid == validate_uid(series_uid,
                                                                    "SeriesInstanceUID"))
    stmt = stmt.order_by(Study.last_received_at.desc(), Study.id.desc(), Series.id,
                         Instance.instance_number, Instance.id)
    modalities = _Modalities(session)

    def records() -> Iterator[dict[str, Any]]:
        for inst, series, st in _chunks(session, stmt):
            uid, suid, sop = (st.study_instance_uid, series.series_instance_uid,
                              inst.sop_instance_uid)
            yield {**header(inst.path), **dict((
                _el("StudyInstanceUID", uid), _el("SeriesInstanceUID", suid),
                _el("SOPInstanceUID", sop), _el("SOPClassUID", inst.sop_class_uid),
                _el("ModalitiesInStudy", *modalities(st.id)),
                _el("InstanceAvailability", "ONLINE"),
                _el("RetrieveURL", f"{base}/studies/{uid}/series/{suid}/instances/{sop}")))}
    return _page(records(), query, qido.INSTANCE_RETURN)


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
