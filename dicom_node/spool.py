"""Where received instances live on disk.

Paths are built only from SHA-1 hashes of validated UIDs, never from raw tag values, so a
hostile UID cannot steer a write outside the spool. Writes go to a temporary file in the
target folder, are fsynced and then renamed: a crash leaves either the whole file or none
(and at worst a `.incoming-*.tmp` file, never read as an instance). Once the folder is
fsynced the file is the record of the instance: the node acknowledges it then, and the index
follows (see :mod:`dicom_node.indexer`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dicom_node.uids import uid_hash, validate_uid


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path_for(self, study_uid: str, sop_uid: str) -> Path:
        study = uid_hash(validate_uid(study_uid, "StudyInstanceUID"))
        sop = uid_hash(validate_uid(sop_uid, "SOPInstanceUID"))
        # hex digests cannot hold a separator or "..", so the path stays under root by
        # construction; no resolve() (an lstat per component) on the ingest hot path
        return self.root / study[:2] / study / f"{sop}.dcm"

    def stage(self, path: Path, data: bytes) -> Path:
        """Write ``data`` durably beside ``path`` under a temporary name.

        Staging first lets ingest do the slow part (write + fsync) before its database
        transaction, and move the file into place only once the index row is claimed.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def place_new(self, staged: Path, path: Path) -> bool:
        """Like :meth:`place`, but never over an existing file: False (and the staged copy
        removed) when the instance is there already. A hard link is the atomic
        rename-unless-exists, so of two copies of one instance arriving at once the first
        stays, as its index row will say."""
        try:
            os.link(staged, path)
        except FileExistsError:
            return False
        finally:
            staged.unlink(missing_ok=True)
        self._sync_folder(path.parent)
        return True

    def place(self, staged: Path, path: Path) -> None:
        """Atomic rename, then the folder fsync that makes the rename itself durable."""
        os.replace(staged, path)
        self._sync_folder(path.parent)

    @staticmethod
    def _sync_folder(folder: Path) -> None:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
