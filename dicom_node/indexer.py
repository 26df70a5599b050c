"""Indexing spooled instances in batches, off the association's thread.

The spool is the record: a C-STORE or STOW instance is acknowledged once its file is durable
there, and the index (instance row, study and series counters, its ``instance.stored`` audit
row) follows within milliseconds, written here by one thread per receiving process. While a
transaction commits, the next instances queue up and go in the following one (group commit),
so the database pays one commit for many instances, and a database restart only makes the
queue longer: the writer retries the same batch until it commits.

The claim is the same ``ON CONFLICT`` insert as before, so indexing is idempotent: the startup
and periodic sweep (:class:`Sweeper`) may index a file a receiver still holds in its queue,
and whichever comes second finds the row and changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import audit
from dicom_node.db.models import Instance
from dicom_node.instance_index import AlreadyIndexed, InstanceIndex, Learned, Received, StudyFull

log = logging.getLogger(__name__)

MAX_BATCH = 256
#: how long the writer lets a batch fill after its first instance: the index is off the
#: answer path, so a few milliseconds here cost no sender anything and save commits
LINGER_SECONDS = 0.05
BACKOFF_SECONDS = (0.2, 5.0)


class _Careful(Exception):
    """An instance of the batch needs its own savepoint (duplicate, full study, stale id)."""


def _noop() -> None:
    """The file is in place already: the spool, not the transaction, is the record."""


def write_batch(sessions: sessionmaker[Session], index: InstanceIndex, items: list[Received],
                audits: Iterable[dict[str, Any]] = ()) -> dict[str, int]:
    """Index ``items`` and append ``audits`` in one transaction; returns outcome counts.

    First optimistically without savepoints (one statement per instance on PostgreSQL); if
    any instance is a duplicate, over the study limit or hits a stale cached id, the batch
    is rolled back and redone with a savepoint per instance, so one such instance neither
    fails the others nor leaves rows behind. Database errors propagate: the caller retries.
    """
    audits = list(audits)
    try:
        return _write(sessions, index, items, audits, careful=False)
    except _Careful:
        index.forget()
        return _write(sessions, index, items, audits, careful=True)


def _write(sessions: sessionmaker[Session], index: InstanceIndex, items: list[Received],
           audits: list[dict[str, Any]], *, careful: bool) -> dict[str, int]:
    learned: Learned = []
    duplicates: list[Received] = []
    full: list[tuple[Received, str]] = []
    with sessions() as session, session.begin():
        conn = session.connection()
        for item in items:
            if not careful:
                try:
                    learned += index.add(conn, item, _noop)
                except (AlreadyIndexed, StudyFull, IntegrityError):
                    raise _Careful from None
                continue
            for attempt in range(2):
                try:
                    with conn.begin_nested():
                        learned += index.add(conn, item, _noop)
                except AlreadyIndexed:
                    duplicates.append(item)
                except StudyFull as exc:
                    full.append((item, str(exc)))
                except IntegrityError:
                    index.forget()  # a cached study/series row that is gone: look it up again
                    if attempt == 0:
                        continue
                    raise
                break
        for item, why in full:
            audit.append(conn, "instance.refused", study_uid=item.study_instance_uid,
                         patient_id=item.patient_id, ae_title=item.ae_title, ip=item.ip,
                         source=item.source, sop_instance_uid=item.sop_instance_uid,
                         status="0xA700", reason=f"acknowledged, then not indexed: {why}")
        kept = dict(conn.execute(select(Instance.sop_instance_uid, Instance.path).where(
            Instance.sop_instance_uid.in_([d.sop_instance_uid for d in duplicates]))).all()
        ) if duplicates else {}
        for fields in audits:
            audit.append(conn, **fields)
    index.committed(learned)
    # after the commit: a SOP UID sent again under another study was spooled at a path of
    # its own; the first copy is the one kept, as with any duplicate
    for item in duplicates:
        if kept.get(item.sop_instance_uid) not in (None, item.path):
            Path(item.path).unlink(missing_ok=True)
    for item, why in full:
        log.error("instance %s acknowledged but not indexed: %s", item.sop_instance_uid, why)
        Path(item.path).unlink(missing_ok=True)
    return {"indexed": len(items) - len(duplicates) - len(full),
            "duplicates": len(duplicates), "refused": len(full)}


class Indexer:
    """The batch writer of one receiving process (serve, or a DIMSE_PROCESSES sibling).

    ``pending_bytes`` (acknowledged, not yet committed) is what the spool bound limits while
    the database is away; ``flush()`` is how a test or a shutdown waits for the index.
    """

    def __init__(self, sessions: sessionmaker[Session], index: InstanceIndex) -> None:
        self.sessions = sessions
        self.index = index
        self._cond = threading.Condition()
        self._queue: deque[Received] = deque()
        self._audits: deque[dict[str, Any]] = deque()
        self.pending_bytes = 0
        self._submitted = 0  # instances and audit events handed in
        self._done = 0       # ... and written (or given up on)
        self._stopping = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.outage_since: float | None = None

    # --- the receiving threads' side ------------------------------------------------------

    def submit(self, item: Received) -> None:
        with self._cond:
            self._queue.append(item)
            self.pending_bytes += item.size_bytes
            self._submitted += 1
            self._cond.notify()

    def audit(self, event_type: str, **fields: Any) -> None:
        """An audit event written with the next batch: association events too are answered
        without a database round trip, and are kept while the database is away."""
        with self._cond:
            self._audits.append({"event_type": event_type, **fields})
            self._submitted += 1
            self._cond.notify()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything handed in before this call is written."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self.running:
                    raise TimeoutError(f"{target - self._done} index writes still pending")
                self._cond.wait(min(left, 0.5))

    @property
    def backlog(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Indexer:
        self._thread = threading.Thread(target=self._run, name="indexer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued if the database lets us within ``timeout``; what is left is
        in the spool and the next start's sweep indexes it."""
        try:
            if self.running:
                self.flush(timeout)
        except TimeoutError as exc:
            log.warning("stopping with %s; the startup sweep will index them", exc)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the writer ------------------------------------------------------------------------

    def _take(self) -> tuple[list[Received], list[dict[str, Any]]] | None:
        with self._cond:
            while not self._queue and not self._audits and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            if len(self._queue) < MAX_BATCH:
                self._cond.wait(LINGER_SECONDS)
            count = min(len(self._queue), MAX_BATCH)
            items = [self._queue.popleft() for _ in range(count)]
            audits = list(self._audits)
            self._audits.clear()
            return items, audits

    def _give_back(self, items: list[Received], audits: list[dict[str, Any]]) -> None:
        with self._cond:
            self._queue.extendleft(reversed(items))
            self._audits.extendleft(reversed(audits))

    def _written(self, items: list[Received], audits: list[dict[str, Any]]) -> None:
        with self._cond:
            self._done += len(items) + len(audits)
            self.pending_bytes -= sum(i.size_bytes for i in items)
            self._cond.notify_all()

    def _run(self) -> None:
        delay = BACKOFF_SECONDS[0]
        while (taken := self._take()) is not None:
            items, audits = taken
            try:
                write_batch(self.sessions, self.index, items, audits)
            except (DBAPIError, SQLAlchemyError) as exc:
                self._give_back(items, audits)
                if self.outage_since is None:
                    self.outage_since = time.monotonic()
                    log.warning("index writes wait for the database (%d queued): %s",
                                self.backlog, getattr(exc, "orig", None) or exc)
                self._wake.wait(delay)
                delay = min(delay * 2, BACKOFF_SECONDS[1])
                continue
            except Exception:
                self._one_by_one(items, audits)
                continue
            if self.outage_since is not None:
                log.warning("database back after %.1f s; index catching up",
                            time.monotonic() - self.outage_since)
                self.outage_since = None
            delay = BACKOFF_SECONDS[0]
            self._written(items, audits)

    def _one_by_one(self, items: list[Received], audits: list[dict[str, Any]]) -> None:
        """A fault that is not the database's: isolate it, so one bad instance cannot hold
        the queue. Its file stays in the spool and the sweep tries it again."""
        for position, item in enumerate(items):
            try:
                write_batch(self.sessions, self.index, [item])
            except (DBAPIError, SQLAlchemyError):
                self._give_back(items[position:], audits)
                return
            except Exception:
                log.exception("instance %s not indexed", item.sop_instance_uid)
            self._written([item], [])
        try:
            write_batch(self.sessions, self.index, [], audits)
        except Exception:
            log.exception("%d audit events not written", len(audits))
        self._written([], audits)
