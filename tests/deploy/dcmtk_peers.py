"""dcmtk peers for PACS tests: storescp standing in for the node, storescu sending files.

An end-to-end test replaces `StoreSCP` with the real node; everything else stays the same.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import _harness
import pydicom
import pydicom.errors
from orthanc import Modality


class StoreSCP(_harness.Storescp):
    """dcmtk storescp writing what it receives into a folder: stands in for the node, so it
    keeps one file per SOP instance, as the node's spool does."""

    def __init__(self, workdir: Path, aet: str = "LUMBARNODE") -> None:
        if shutil.which("storescp") is None:
            raise FileNotFoundError("dcmtk storescp is not installed")
        super().__init__(Path(workdir), ae_title=aet, unique_filenames=False)
        self.aet = aet

    @property
    def modality(self) -> Modality:
        return Modality(self.aet, "127.0.0.1", self.port)

    def received_uids(self) -> set[str]:
        """SOP Instance UIDs of the files received so far (one being written is skipped)."""
        uids = set()
        for path in self.files():
            try:
                uids.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
            except (OSError, AttributeError, pydicom.errors.InvalidDicomError):
                continue
        return uids


def sop_uids(paths: Iterable[Path]) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def store_scu(
    files: Sequence[Path], *, port: int, called_aet: str, calling_aet: str
) -> subprocess.CompletedProcess[str]:
    """Send files to a loopback peer with dcmtk storescu, proposing only the SOP classes the
    files need."""
    if not files:
        raise ValueError("store_scu needs at least one file")
    return _harness.storescu(port, files, calling=calling_aet, called=called_aet,
                             extra=["--required"], timeout=60)
