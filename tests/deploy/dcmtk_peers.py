"""dcmtk peers for PACS tests: storescp standing in for the node, storescu sending files.

An end-to-end test replaces `StoreSCP` with the real node; everything else stays the same.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import pydicom
import pydicom.errors
from orthanc import Modality, free_port, port_open, wait_until


class StoreSCP:
    """dcmtk storescp writing what it receives into a folder: stands in for the node."""

    def __init__(self, workdir: Path, aet: str = "LUMBARNODE") -> None:
        if shutil.which("storescp") is None:
            raise FileNotFoundError("dcmtk storescp is not installed")
        self.aet = aet
        self.port = free_port()
        self.workdir = Path(workdir)
        self.out_dir = self.workdir / "received"
        self.log_path = self.workdir / "storescp.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def modality(self) -> Modality:
        return Modality(self.aet, "127.0.0.1", self.port)

    def start(self, timeout: float = 10.0) -> StoreSCP:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                ["storescp", "--aetitle", self.aet, "--output-directory", str(self.out_dir),
                 "--accept-all", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        def listening() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"storescp exited early:\n{self.log_path.read_text()}")
            return port_open(self.port)

        try:
            wait_until(listening, timeout, "storescp to listen")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> StoreSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def received(self) -> list[Path]:
        """Files storescp wrote (it names each by modality prefix + SOP Instance UID)."""
        return sorted(p for p in self.out_dir.iterdir() if p.is_file())

    def received_uids(self) -> set[str]:
        """SOP Instance UIDs of the files received so far (one being written is skipped)."""
        uids = set()
        for path in self.received():
            try:
                uids.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
            except (OSError, AttributeError, pydicom.errors.InvalidDicomError):
                continue
        return uids


def sop_uids(paths: Iterable[Path]) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def store_scu(
    files: Sequence[Path], *, host: str, port: int, called_aet: str, calling_aet: str
) -> subprocess.CompletedProcess[str]:
    """Send files with dcmtk storescu, proposing only the SOP classes the files need."""
    if not files:
        raise ValueError("store_scu needs at least one file")
    return subprocess.run(
        ["storescu", "--required", "--aetitle", calling_aet, "--call", called_aet,
         host, str(port), *map(str, files)],
        capture_output=True, text=True, timeout=60, check=False,
    )
