"""Small real DICOM studies and network helpers for the node tests."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

ROOT = "1.2.826.0.1.3680043.10.1000."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


def mr_instance(
    study_uid: str, series_uid: str, index: int, *, plane: str, te: float, tr: float,
    description: str = "", body_part: str = "LSPINE", modality: str = "MR", size: int = 16,
    sop_uid: str | None = None, patient_id: str = "NODE0001",
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid(ROOT)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientID, ds.PatientName = patient_id, "NODE^TEST"
    ds.Modality, ds.BodyPartExamined = modality, body_part
    ds.SeriesDescription = description
    ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260101", "120000", "ACC1"
    ds.FrameOfReferenceUID = generate_uid(ROOT)
    if plane == "sagittal":
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-20 + 4 * index, -100, 100]
    else:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-100, -100, 50 - 4 * index]
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 4.0
    ds.EchoTime, ds.RepetitionTime = te, tr
    ds.ScanningSequence, ds.SequenceVariant = "SE", "NONE"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(size * size, dtype=np.uint16) + index).tobytes()
    return ds


SERIES = {
    "sag_t2": dict(plane="sagittal", te=100.0, tr=3000.0, description="SAG T2"),
    "sag_t1": dict(plane="sagittal", te=10.0, tr=500.0, description="SAG T1"),
    "ax_t2": dict(plane="axial", te=100.0, tr=4000.0, description="AX T2"),
}


def write_study(
    out: Path, roles: tuple[str, ...] = ("sag_t2", "sag_t1", "ax_t2"), n: int = 6,
    study_uid: str | None = None, **overrides: object,
) -> tuple[str, list[Path]]:
    """A tiny lumbar MR study on disk; returns its StudyInstanceUID and files."""
    study_uid = study_uid or generate_uid(ROOT)
    files = []
    for role in roles:
        series_uid = generate_uid(ROOT)
        (out / role).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            params = {**SERIES[role], **overrides}
            ds = mr_instance(study_uid, series_uid, i, **params)  # type: ignore[arg-type]
            path = out / role / f"IM{i + 1:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return study_uid, files


def storescu(port: int, files: list[Path], calling: str = "PACS", called: str = "LUMBARNODE",
             *extra: str) -> subprocess.CompletedProcess[str]:
    """dcmtk's storescu, the way a PACS sends: one association, all files."""
    return subprocess.run(
        ["storescu", "-v", *extra, "-aet", calling, "-aec", called, "127.0.0.1", str(port),
         *[str(f) for f in files]],
        capture_output=True, text=True, timeout=120,
    )


def wait_for(predicate: object, timeout: float = 60.0, interval: float = 0.2) -> object:
    """Poll until predicate() is truthy; returns its value or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


class Storescp:
    """dcmtk's storescp as the PACS that receives the results."""

    def __init__(self, out: Path, port: int, ae_title: str = "PACS") -> None:
        self.out, self.port = out, port
        out.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["storescp", "--aetitle", ae_title, "--output-directory", str(out), str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
