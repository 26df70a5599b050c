"""Where received instances live on disk.

Paths are built only from SHA-1 hashes of validated UIDs, never from raw tag values, so a
hostile UID cannot steer a write outside the spool. Writes go to a temporary file in the
target folder, are fsynced and then renamed: a crash leaves either the whole file or none.
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
        path = self.root / study[:2] / study / f"{sop}.dcm"
        if self.root not in path.resolve().parents:
            raise ValueError(f"spool path {path} escapes {self.root}")
        return path

    def write(self, study_uid: str, sop_uid: str, data: bytes) -> Path:
        path = self.path_for(study_uid, sop_uid)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path
