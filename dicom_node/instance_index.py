"""The database side of receiving one instance, in as few statements as the rules allow.

Ingest runs on the hot path of every C-STORE: a sender waits for our answer before it sends
the next instance, so each database round trip is paid once per instance per association.
The ORM unit of work cost ~10 ms an instance here; on PostgreSQL the common case is now one
statement and a commit (SQLite, without data-modifying CTEs, runs the same steps as four):

* the instance insert is also the duplicate check (``ON CONFLICT DO NOTHING RETURNING``),
* study and series ids come from a per-process cache once the rows are known to exist,
* the study counter update carries its own guard (``state = 'receiving' AND instance_count <
  limit``); only when it matches no row do we lock the row and work out why (limit reached,
  or a processed study re-opened by a late instance).

Cache entries are added only after their transaction commits, and a foreign-key failure
(a cached row that is no longer there) empties the cache and the caller retries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Connection, Select, bindparam, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dicom_node import audit
from dicom_node.db.models import AuditEvent, Instance, Series, Study, utcnow
from dicom_node.db.session import for_update

STUDIES, SERIES, INSTANCES = Study.__table__, Series.__table__, Instance.__table__
AUDIT = AuditEvent.__table__


class StudyFull(Exception):
    """The study already holds the configured maximum of instances."""


class AlreadyIndexed(Exception):
    """The SOP instance has a row already: a duplicate, acknowledged and not stored again."""


@dataclass(frozen=True)
class Received:
    """What the index needs of one instance; read from the dataset once, by the caller."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_class_name: str
    transfer_syntax_uid: str
    patient_id: str | None
    accession_number: str | None
    modality: str | None
    series_description: str
    series_number: int | None
    instance_number: int | None
    path: str
    size_bytes: int
    sha256: str
    source: str
    ae_title: str | None
    ip: str | None


def _insert(conn: Connection, table: Any) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _get_or_insert(conn: Connection, table: Any, key: str, values: dict[str, Any]) -> tuple[
        int, bool]:
    """The row's id, inserting it unless a concurrent sender got there first."""
    inserted = conn.execute(_insert(conn, table).values(**values)
                            .on_conflict_do_nothing(index_elements=[key])
                            .returning(table.c.id)).first()
    if inserted is not None:
        return int(inserted[0]), True
    found = conn.execute(select(table.c.id).where(table.c[key] == values[key])).scalar_one()
    return int(found), False


# Hot-path statements are built once with bind parameters: building a statement per call
# cost more CPU than the round trip it makes.
_GUARD = (STUDIES.c.id == bindparam("b_id"), STUDIES.c.state == "receiving",
          STUDIES.c.instance_count < bindparam("b_max"))
_COUNT_IN_STUDY = update(STUDIES).where(*_GUARD).values(
    instance_count=STUDIES.c.instance_count + 1, last_received_at=bindparam("b_now"))
_COUNT_IN_STUDY_FROM_AE = update(STUDIES).where(*_GUARD).values(
    instance_count=STUDIES.c.instance_count + 1, last_received_at=bindparam("b_now"),
    calling_ae=bindparam("b_ae"), calling_ip=bindparam("b_ip"))
_COUNT_IN_SERIES = update(SERIES).where(SERIES.c.id == bindparam("series_id")).values(
    instance_count=SERIES.c.instance_count + 1)


_INSTANCE_COLUMNS = ("series_id", "sop_instance_uid", "sop_class_uid", "transfer_syntax_uid",
                     "instance_number", "path", "size_bytes", "sha256", "received_at", "source")
_INSERT_INSTANCE = {
    name: dialect.insert(INSTANCES).on_conflict_do_nothing(index_elements=["sop_instance_uid"])
    .returning(INSTANCES.c.id) for name, dialect in (("postgresql", postgresql),
                                                     ("sqlite", sqlite))}


def _stored_in_one_statement(from_ae: bool) -> Select:
    """PostgreSQL: claim the SOP UID, count it in study and series and audit it, in one
    round trip, built from the same statements the SQLite path runs one by one. Each counter
    and the audit row depend on the claim (``EXISTS ins``), so a duplicate changes nothing;
    ``counted`` is 0 when the study guard did not match (limit reached, or a processed
    study), and the caller then takes the locked slow path.
    """
    ins = (_INSERT_INSTANCE["postgresql"]
           .values({c: bindparam(c, type_=INSTANCES.c[c].type) for c in _INSTANCE_COLUMNS})
           .cte("ins"))
    claimed = exists(select(ins.c.id))
    count_in_study = _COUNT_IN_STUDY_FROM_AE if from_ae else _COUNT_IN_STUDY
    study = (count_in_study.where(claimed, bindparam("b_count", type_=Boolean))
             .returning(STUDIES.c.id).cte("counted"))
    series = _COUNT_IN_SERIES.where(claimed).returning(SERIES.c.id).cte("series_counted")
    audited = (insert(AUDIT).from_select(
        ["at", "event_type", "study_instance_uid", "patient_id", "ae_title", "ip", "detail"],
        select(*(bindparam(name, type_=AUDIT.c[column].type) for name, column in (
            ("received_at", "at"), ("a_type", "event_type"), ("a_study", "study_instance_uid"),
            ("a_patient", "patient_id"), ("a_ae", "ae_title"), ("a_ip", "ip"),
            ("a_detail", "detail")))).where(claimed))
        .returning(AUDIT.c.id).cte("audited"))
    return select(select(ins.c.id).scalar_subquery().label("instance_id"),
                  select(func.count()).select_from(study).scalar_subquery().label("counted"),
                  ).add_cte(series, audited)


_STORED_PG = {from_ae: _stored_in_one_statement(from_ae) for from_ae in (False, True)}


def _stored_detail(item: Received) -> dict[str, str]:
    """The detail of an ``instance.stored`` audit event, the same on both paths."""
    return {"source": item.source, "sop_instance_uid": item.sop_instance_uid,
            "series_instance_uid": item.series_instance_uid, "sop_class": item.sop_class_name}


#: ids an indexing transaction learned, to cache once it has committed
Learned = list[tuple[dict[str, int], str, int]]


class InstanceIndex:
    """Per-process: one instance shared by every association thread of the SCP."""

    def __init__(self, max_instances_per_study: int) -> None:
        self.max_instances_per_study = max_instances_per_study
        self._lock = threading.Lock()
        self._study_ids: dict[str, int] = {}
        self._series_ids: dict[str, int] = {}

    def forget(self) -> None:
        with self._lock:
            self._study_ids.clear()
            self._series_ids.clear()

    def add(self, conn: Connection, item: Received, place_file: Callable[[], None]) -> Learned:
        """Index ``item`` in the caller's transaction; AlreadyIndexed when it was there.
        Returns the study and series ids to pass to :meth:`committed` after the commit.

        ``place_file`` runs after the instance row is inserted and before the caller commits:
        the row's unique key is held by this transaction, so no concurrent copy of the same
        instance can move a file into place at the same moment.
        """
        now = utcnow()
        study_id, study_cached = self._study(conn, item, now)
        series_id, series_cached = self._series(conn, item, study_id)
        values = {"series_id": series_id, "sop_instance_uid": item.sop_instance_uid,
                  "sop_class_uid": item.sop_class_uid,
                  "transfer_syntax_uid": item.transfer_syntax_uid,
                  "instance_number": item.instance_number, "path": item.path,
                  "size_bytes": item.size_bytes, "sha256": item.sha256, "received_at": now,
                  "source": item.source}
        counts = item.source != "result"
        if conn.dialect.name == "postgresql":
            counted = self._add_in_one_statement(conn, item, values, study_id)
        else:
            counted = self._add_step_by_step(conn, item, values, study_id)
        place_file()
        if counts and not counted:
            self._count_in_study(conn, item, study_id, now)
        learned: Learned = []
        if not study_cached:
            learned.append((self._study_ids, item.study_instance_uid, study_id))
        if not series_cached:
            learned.append((self._series_ids, item.series_instance_uid, series_id))
        return learned

    def _add_in_one_statement(self, conn: Connection, item: Received, values: dict[str, Any],
                              study_id: int) -> bool:
        """The PostgreSQL hot path; True when the study counter was updated."""
        row = conn.execute(_STORED_PG[bool(item.ae_title)], {
            **values, "b_id": study_id, "b_max": self.max_instances_per_study,
            "b_now": values["received_at"],
            "b_count": item.source != "result", "b_ae": item.ae_title, "b_ip": item.ip,
            "a_type": "instance.stored", "a_study": item.study_instance_uid,
            "a_patient": item.patient_id, "a_ae": item.ae_title, "a_ip": item.ip,
            "a_detail": _stored_detail(item)}).one()
        if row.instance_id is None:
            raise AlreadyIndexed(item.sop_instance_uid)
        return bool(row.counted)

    def _add_step_by_step(self, conn: Connection, item: Received, values: dict[str, Any],
                          study_id: int) -> bool:
        """SQLite has no data-modifying CTEs: the same steps as statements of their own."""
        if conn.execute(_INSERT_INSTANCE["sqlite"], values).first() is None:
            # roll back: a study or series row made above for a reused SOP UID under another
            # study would otherwise stay behind, empty
            raise AlreadyIndexed(item.sop_instance_uid)
        counted = False
        if item.source != "result":
            counted = self._count_if_receiving(conn, item, study_id, values["received_at"])
        conn.execute(_COUNT_IN_SERIES, {"series_id": values["series_id"]})
        audit.append(conn, "instance.stored", study_uid=item.study_instance_uid,
                     patient_id=item.patient_id, ae_title=item.ae_title, ip=item.ip,
                     **_stored_detail(item))
        return counted

    def committed(self, learned: Learned) -> None:
        """Cache ids once the transaction that found or made their rows has committed."""
        with self._lock:
            for cache, uid, row_id in learned:
                cache[uid] = row_id

    # --- study -------------------------------------------------------------------------

    def _study(self, conn: Connection, item: Received, now: datetime) -> tuple[int, bool]:
        """The study's id and whether it came from the cache."""
        uid = item.study_instance_uid
        cached = self._study_ids.get(uid)
        if cached is not None:
            return cached, True
        study_id, inserted = _get_or_insert(conn, STUDIES, "study_instance_uid", {
            "study_instance_uid": uid, "patient_id": item.patient_id,
            "accession_number": item.accession_number, "calling_ae": item.ae_title,
            "calling_ip": item.ip, "state": "receiving", "first_received_at": now,
            "last_received_at": now, "instance_count": 0})
        if inserted:
            audit.append(conn, "study.first_instance", study_uid=uid, patient_id=item.patient_id,
                         ae_title=item.ae_title, ip=item.ip, source=item.source)
        return study_id, False

    def _count_if_receiving(self, conn: Connection, item: Received, study_id: int,
                            now: datetime) -> bool:
        """The guarded counter update of the step-by-step path; False when it matched no row."""
        params: dict[str, Any] = {"b_id": study_id,
                                  "b_max": self.max_instances_per_study, "b_now": now}
        if item.ae_title:
            params.update(b_ae=item.ae_title, b_ip=item.ip)
            return conn.execute(_COUNT_IN_STUDY_FROM_AE, params).rowcount == 1
        return conn.execute(_COUNT_IN_STUDY, params).rowcount == 1

    def _count_in_study(self, conn: Connection, item: Received, study_id: int,
                        now: datetime) -> None:
        """The guard did not match: lock the row and work out why (limit, or re-opening)."""
        values: dict[str, Any] = {"instance_count": STUDIES.c.instance_count + 1,
                                  "last_received_at": now}
        if item.ae_title:
            values.update(calling_ae=item.ae_title, calling_ip=item.ip)
        current = conn.execute(for_update(conn, select(
            STUDIES.c.state, STUDIES.c.instance_count, STUDIES.c.patient_id).where(
            STUDIES.c.id == study_id))).one()
        if current.instance_count >= self.max_instances_per_study:
            raise StudyFull(f"study holds {current.instance_count} instances, the limit is "
                            f"{self.max_instances_per_study}")
        audit.append(conn, "study.reopened", study_uid=item.study_instance_uid,
                     patient_id=current.patient_id, ae_title=item.ae_title, ip=item.ip,
                     previous_state=current.state, sop_instance_uid=item.sop_instance_uid)
        conn.execute(update(STUDIES).where(STUDIES.c.id == study_id).values(
            state="receiving", reason=None, checked_at=None, **values))

    # --- series ------------------------------------------------------------------------

    def _series(self, conn: Connection, item: Received, study_id: int) -> tuple[int, bool]:
        """The series' id and whether it came from the cache."""
        uid = item.series_instance_uid
        cached = self._series_ids.get(uid)
        if cached is not None:
            return cached, True
        series_id, inserted = _get_or_insert(conn, SERIES, "series_instance_uid", {
            "study_id": study_id, "series_instance_uid": uid, "modality": item.modality,
            "series_description": item.series_description, "series_number": item.series_number,
            "is_result": item.source == "result", "instance_count": 0})
        if inserted and item.modality:
            self._add_modality(conn, study_id, item.modality)
        return series_id, False

    @staticmethod
    def _add_modality(conn: Connection, study_id: int, modality: str) -> None:
        current = conn.execute(select(func.coalesce(STUDIES.c.modalities, "")).where(
            STUDIES.c.id == study_id)).scalar_one()
        mods = set(filter(None, current.split("\\"))) | {modality}
        joined = "\\".join(sorted(mods))[:64]
        if joined != current:
            conn.execute(update(STUDIES).where(STUDIES.c.id == study_id)
                         .values(modalities=joined))
