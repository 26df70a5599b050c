"""Index every spooled file that has no row: at startup, and periodically.

A receiving process acknowledges an instance once its file is durable and indexes it a
moment later; if it is killed in between (``kill -9``, power loss), the file is the only
trace. The serve process sweeps the whole spool once at startup and then, every
INDEX_SWEEP_SECONDS, only the study folders changed since the last sweep (a folder's mtime
moves when a file is placed in it), for files older than a grace period: younger ones are
most likely still in a live receiver's queue. Indexing twice is harmless (the claim is an
``ON CONFLICT`` insert), so the grace period only saves work.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.db.models import Instance
from dicom_node.indexer import MAX_BATCH, write_batch
from dicom_node.ingest import IngestError, received_from_file
from dicom_node.instance_index import InstanceIndex, Received

log = logging.getLogger(__name__)

#: folder mtimes and clocks are compared across a rename; allow for coarse timestamps
MARGIN_SECONDS = 2.0


class Sweeper:
    def __init__(self, spool: Path, sessions: sessionmaker[Session], index: InstanceIndex,
                 grace_seconds: float = 30.0) -> None:
        self.spool = Path(spool).resolve()
        self.sessions = sessions
        self.index = index
        self.grace_seconds = grace_seconds
        self.horizon: float | None = None  # None: nothing swept yet, look at everything

    def sweep(self) -> int:
        """Index the files without a row; returns how many were indexed. A database error
        propagates and the same horizon is swept again next time."""
        started = time.time()
        full = self.horizon is None
        horizon = 0.0 if full else self.horizon - MARGIN_SECONDS
        youngest = started - (0.0 if full else self.grace_seconds)
        candidates = list(self._files(horizon, youngest))
        indexed = 0
        if candidates:
            missing = self._without_row(candidates, full)
            items = list(self._describe(missing))
            for start in range(0, len(items), MAX_BATCH):
                indexed += write_batch(self.sessions, self.index,
                                       items[start:start + MAX_BATCH])["indexed"]
            if indexed:
                log.warning("sweep indexed %d spooled instances that had no row", indexed)
        self.horizon = youngest
        return indexed

    def _files(self, horizon: float, youngest: float) -> list[str]:
        found: list[str] = []
        if not self.spool.is_dir():
            return found
        for top in os.scandir(self.spool):
            if not top.is_dir(follow_symlinks=False) or len(top.name) != 2:
                continue
            for study in os.scandir(top.path):
                if not study.is_dir(follow_symlinks=False) or \
                        study.stat(follow_symlinks=False).st_mtime < horizon:
                    continue
                for entry in os.scandir(study.path):
                    if entry.name.startswith(".") or not entry.name.endswith(".dcm"):
                        continue
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                    if horizon <= mtime <= youngest:
                        found.append(entry.path)
        return found

    def _without_row(self, paths: list[str], full: bool) -> list[str]:
        with self.sessions() as session:
            if full:
                known = set(session.scalars(select(Instance.path)))
            else:
                known = set()
                for start in range(0, len(paths), 1000):
                    known.update(session.scalars(select(Instance.path).where(
                        Instance.path.in_(paths[start:start + 1000]))))
        return [p for p in paths if p not in known]

    @staticmethod
    def _describe(paths: list[str]) -> list[Received]:
        items = []
        for path in paths:
            try:
                items.append(received_from_file(Path(path)))
            except (IngestError, OSError) as exc:
                # checked when it was received, so this is damage on disk: keep the file
                log.error("spooled file %s cannot be indexed: %s", path, exc)
        return items
