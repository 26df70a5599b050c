"""Many PACS associations at once: is every instance stored once, every study processed and
every result delivered to the PACS exactly once?

    .venv/bin/python benchmarks/load.py --studies 50 --concurrency 16 --workers 2

Each study goes over its own association (``--split 2`` sends each study as two concurrent
associations, racing on the same study row); ``--repeat`` sends that fraction of the
instances a second time, which must be acknowledged and stored once. The run ends when every
study has settled (or ``--timeout``) and prints the numbers and every broken promise.

The study writers and the exactly-once checks here are shared with faults.py,
turnaround.py and tests/resilience.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset

SEED = 4242
UID_ROOT = "1.2.826.0.1.3680043.10.1001."
ROLES: dict[str, dict[str, Any]] = {
    "sag_t2": {"plane": "sagittal", "te": 100.0, "tr": 3000.0},
    "sag_t1": {"plane": "sagittal", "te": 10.0, "tr": 500.0},
    "ax_t2": {"plane": "axial", "te": 100.0, "tr": 4000.0},
}


def write_study(out: Path, seed: int, *, matrix: int = 64, synthetic: bool = True) -> list[Path]:
    """A lumbar MR study on disk: the synthetic generator's when available, else small
    pydicom series with the three roles the node waits for."""
    if synthetic:
        try:
            from models.synth import generate_study
        except ImportError:
            synthetic = False
    if synthetic:
        generate_study(out, seed, matrix=matrix)
        return sorted((out / "dicom").rglob("*.dcm"))
    return plain_study(out, seed, size=matrix)


def plain_study(out: Path, seed: int, *, size: int = 64, per_series: int = 15) -> list[Path]:
    """Sagittal T2, sagittal T1 and axial T2 of one patient, ``per_series`` images each."""
    import numpy as np
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    study_uid = generate_uid(UID_ROOT)
    files: list[Path] = []
    for number, role in enumerate(ROLES, start=1):
        files += write_series(
            out, study_uid, role, per_series, size=size, rng=rng, description=role.upper(),
            SeriesNumber=number, first_x=-28.0, patient_id=f"BENCH{seed:05d}",
            PatientName=f"BENCH^PATIENT{seed:05d}", AccessionNumber=f"A{seed}")
    return files


def write_series(out: Path, study_uid: str, role: str, count: int,
                 **instance: Any) -> list[Path]:
    """``count`` images of one of the ``ROLES`` as ``out/<role>/IM0001.dcm``...; ``instance``
    goes to `mr_instance` and may override the role's plane and timing."""
    from pydicom.uid import generate_uid

    series_uid = generate_uid(UID_ROOT)
    instance = {**ROLES[role], "FrameOfReferenceUID": generate_uid(UID_ROOT), **instance}
    (out / role).mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = out / role / f"IM{i + 1:04d}.dcm"
        mr_instance(study_uid, series_uid, i, **instance).save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def mr_instance(study_uid: str, series_uid: str, index: int, *, plane: str, te: float,
                tr: float, description: str = "", body_part: str = "LSPINE",
                modality: str = "MR", size: int = 16, sop_uid: str | None = None,
                patient_id: str = "NODE0001", first_x: float = -20.0,
                rng: np.random.Generator | None = None, **attributes: Any) -> Dataset:
    """One spin-echo slice with just what the node reads from a scanner's image: the headers
    its series roles, study checks and geometry use, and a valid 12-bit pixel module (noise
    drawn from ``rng``, so a seeded study is the same every run, else a cheap ramp).
    ``attributes`` are further DICOM keywords, set last (what a PACS routes on, say)."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid(UID_ROOT)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.FrameOfReferenceUID = generate_uid(UID_ROOT)
    ds.PatientID, ds.PatientName = patient_id, "NODE^TEST"
    ds.Modality, ds.BodyPartExamined = modality, body_part
    ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, 1, index + 1
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260101", "120000", "ACC1"
    if plane == "sagittal":
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [first_x + 4 * index, -100, 100]
    else:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-100, -100, 50 - 4 * index]
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 4.0
    ds.EchoTime, ds.RepetitionTime = te, tr
    ds.ScanningSequence, ds.SequenceVariant = "SE", "NONE"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = (rng.integers(0, 4095, size * size, dtype=np.uint16) if rng is not None
              else np.arange(size * size, dtype=np.uint16) + index)
    ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def outcome(sessions: Any, study_uids: Sequence[str]) -> dict[str, Any]:
    """What the database says about each study: counts that the invariants are stated on."""
    from sqlalchemy import func, select

    from dicom_node.db.models import Delivery, Instance, Job, ResultObject, Series, Study

    report: dict[str, Any] = {}
    with sessions() as session:
        for uid in study_uids:
            study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
            if study is None:
                report[uid] = None
                continue
            instances = session.scalar(
                select(func.count(Instance.id)).join(Series, Series.id == Instance.series_id)
                .where(Series.study_id == study.id, Instance.source != "result"))
            jobs = session.scalars(select(Job).where(Job.study_id == study.id)
                                   .order_by(Job.id)).all()
            live = [j for j in jobs if j.superseded_by is None]
            job = live[-1] if live else None
            deliveries = session.scalars(select(Delivery).where(
                Delivery.job_id == job.id)).all() if job else []
            results = session.scalars(select(ResultObject.sop_instance_uid).where(
                ResultObject.job_id == job.id, ResultObject.sop_instance_uid.is_not(None))
            ).all() if job else []
            report[uid] = {
                "state": study.state, "instances": instances, "jobs": len(jobs),
                "live_jobs": len(live), "job_state": job.state if job else None,
                "job_attempts": job.attempts if job else 0,
                "result_status": job.result_status if job else None,
                "job_reason": job.reason if job else None,
                "stage_timings": job.stage_timings if job else None,
                "deliveries": sorted(d.status for d in deliveries),
                "result_sops": sorted(results),
            }
    return report


def settled(report: dict[str, Any]) -> bool:
    """Every study has reached an end: its live job finished and deliveries are final."""
    for entry in report.values():
        if entry is None or entry["state"] not in ("processed", "queued", "ignored"):
            return False
        if entry["state"] == "ignored":
            continue
        if entry["job_state"] not in ("done", "failed"):
            return False
        if any(s not in ("delivered", "dead") for s in entry["deliveries"]):
            return False
        if entry["job_state"] == "done" and entry["result_sops"] and not entry["deliveries"]:
            return False
    return True


def violations(report: dict[str, Any], expected_instances: dict[str, int],
               pacs_uids: Sequence[str] | None) -> list[str]:
    """Broken promises: lost or doubled instances, stuck studies, results not delivered
    exactly once. An empty list is the pass condition of every load and fault run."""
    problems: list[str] = []
    received: dict[str, int] = {}
    for sop in pacs_uids or ():
        received[sop] = received.get(sop, 0) + 1
    for uid, expected in expected_instances.items():
        entry = report.get(uid)
        if entry is None:
            problems.append(f"{uid}: study never indexed")
            continue
        if entry["instances"] != expected:
            problems.append(f"{uid}: {entry['instances']} instances indexed, {expected} sent")
        if entry["live_jobs"] != 1:
            problems.append(f"{uid}: {entry['live_jobs']} live jobs")
        if entry["job_state"] not in ("done", "failed"):
            problems.append(f"{uid}: job stuck in {entry['job_state']}")
        if entry["job_state"] == "done" and entry["result_sops"]:
            if entry["deliveries"] != ["delivered"]:
                problems.append(f"{uid}: deliveries {entry['deliveries']}")
            if pacs_uids is not None:
                for sop in entry["result_sops"]:
                    if received.get(sop, 0) != 1:
                        problems.append(f"{uid}: result {sop} at the PACS "
                                        f"{received.get(sop, 0)} times")
    return problems


def _make(args: tuple[Path, int, int, bool]) -> list[Path]:
    folder, seed, matrix, synthetic = args
    return write_study(folder, seed, matrix=matrix, synthetic=synthetic)


def make_studies(folder: Path, count: int, matrix: int, synthetic: bool,
                 processes: int = 2) -> list[list[Path]]:
    """Studies on disk, reused when ``folder`` already holds them (``--cache``)."""
    jobs = [(folder / f"study{i:03d}", 500 + i, matrix, synthetic) for i in range(count)]
    ready, todo = [], []
    for job in jobs:
        existing = sorted(job[0].rglob("*.dcm"))
        (ready if existing else todo).append((job, existing))
    made: dict[Path, list[Path]] = {job[0]: files for job, files in ready}
    if todo:
        with ProcessPoolExecutor(max_workers=processes) as pool:
            for (job, _), files in zip(todo, pool.map(_make, [j for j, _ in todo]), strict=True):
                made[job[0]] = files
    return [made[job[0]] for job in jobs]


def study_uid(files: Sequence[Path]) -> str:
    import pydicom

    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def associations(studies: Sequence[Sequence[Path]], split: int, repeat: float,
                 seed: int = SEED) -> list[list[Path]]:
    """What each association sends: a share of one study, some instances twice."""
    rng = random.Random(seed)
    batches = []
    for files in studies:
        for part in range(split):
            batch = list(files[part::split])
            batch += rng.sample(batch, int(len(batch) * repeat))
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def run_load(stack: _harness.Stack, studies: Sequence[Sequence[Path]], *, concurrency: int,
             split: int = 1, repeat: float = 0.0, timeout: float = 1800) -> dict[str, Any]:
    """Send, wait for every study to settle, check the invariants; returns the numbers."""
    expected = {study_uid(files): len(files) for files in studies}
    batches = associations(studies, split, repeat)
    sent_bytes = sum(p.stat().st_size for files in studies for p in files)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(stack.send, batches))
    sent_at = time.perf_counter()

    def done() -> dict[str, Any] | None:
        report = outcome(stack.sessions, list(expected))
        return report if settled(report) else None

    try:
        report = _harness.wait_for(done, timeout, "every study to settle", interval=1.0)
    except TimeoutError:
        report = outcome(stack.sessions, list(expected))
    settled_at = time.perf_counter()
    pacs_uids = stack.pacs.sop_uids() if stack.pacs is not None else None
    problems = violations(report, expected, pacs_uids)
    problems += spool_problems(stack)
    if not settled(report):
        problems.append("not every study settled before the timeout")
    jobs: dict[str, int] = {}
    for entry in report.values():
        key = f"{entry['job_state']}/{entry['result_status']}" if entry else "missing"
        jobs[key] = jobs.get(key, 0) + 1
    return {
        "studies": len(studies), "associations": len(batches),
        "instances": sum(expected.values()),
        "sent_instances": sum(len(b) for b in batches), "megabytes": sent_bytes / 1e6,
        "send_s": sent_at - start, "settle_s": settled_at - sent_at,
        "inst_s": sum(len(b) for b in batches) / (sent_at - start),
        "jobs": jobs, "delivered": sum(e["deliveries"].count("delivered")
                                       for e in report.values() if e),
        "results_at_pacs": len(pacs_uids or ()), "problems": problems, "report": report,
    }


def spool_problems(stack: _harness.Stack) -> list[str]:
    """Every indexed instance has its file, and the spool holds nothing unindexed."""
    from sqlalchemy import select

    from dicom_node.db.models import Instance

    with stack.sessions() as session:
        paths = session.scalars(select(Instance.path)).all()
    indexed = {str(Path(p).resolve()) for p in paths}
    on_disk = {str(p.resolve()) for p in _harness.spool_files(stack.config.spool)}
    problems = [f"indexed but missing from the spool: {p}" for p in sorted(indexed - on_disk)]
    problems += [f"spool file not indexed: {p}" for p in sorted(on_disk - indexed)]
    if len(paths) != len(indexed):
        problems.append(f"{len(paths) - len(indexed)} instance rows share a spool path")
    return problems[:20]


def print_summary(result: dict[str, Any], workers: int, concurrency: int) -> None:
    print(f"studies {result['studies']}  instances {result['instances']} "
          f"(sent {result['sent_instances']} over {result['associations']} associations, "
          f"{concurrency} at a time)  {result['megabytes']:.1f} MB  workers {workers}")
    print(f"{'send s':>8} {'inst/s':>8} {'settle s':>9} {'delivered':>10} {'at PACS':>8}")
    print(f"{result['send_s']:>8.1f} {result['inst_s']:>8.1f} {result['settle_s']:>9.1f} "
          f"{result['delivered']:>10} {result['results_at_pacs']:>8}")
    print("jobs (state/result):", ", ".join(f"{k} {v}" for k, v in sorted(result["jobs"].items())))
    entries = [e for e in result["report"].values() if e]
    with_results = [e for e in entries if e["result_sops"]]
    print(f"studies with result objects: {len(with_results)}/{result['studies']} "
          f"({sum(len(e['result_sops']) for e in with_results)} objects, each checked at the "
          "PACS exactly once)")
    reasons = sorted({(e["job_reason"] or "")[:100] for e in result["report"].values()
                      if e and e["job_state"] == "failed"})
    for reason in reasons:
        print(f"  failed job reason: {reason}")
    print(f"violations: {len(result['problems'])}")
    for problem in result["problems"][:20]:
        print(f"  {problem}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--matrix", type=int, default=64, help="synthetic image matrix")
    parser.add_argument("--plain", action="store_true",
                        help="small pydicom series instead of synthetic anatomy")
    parser.add_argument("--split", type=int, default=1)
    parser.add_argument("--repeat", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--cache", type=Path, default=None, help="keep generated studies here")
    args = parser.parse_args(argv)
    if min(args.studies, args.concurrency, args.split) < 1 or args.workers < 0:
        parser.error("--studies, --concurrency and --split must be >= 1, --workers >= 0")
    if not 0 <= args.repeat <= 1:
        parser.error(f"--repeat must be within 0..1, got {args.repeat}")
    with tempfile.TemporaryDirectory(prefix="lumbar-load-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        studies = make_studies(args.cache or work / "studies", args.studies, args.matrix,
                               not args.plain)
        print(f"studies ready in {time.perf_counter() - t0:.0f} s")
        redis = _harness.RedisServer(work / "redis").start()
        try:
            with _harness.throwaway_database() as db_url, _harness.Stack(
                    work / "stack", db_url, redis.url, workers=args.workers,
                    loglevel="WARNING", max_associations=max(32, args.concurrency * 2),
                    settle_seconds=2.0, study_timeout_seconds=30.0) as stack:
                result = run_load(stack, studies, concurrency=args.concurrency,
                                  split=args.split, repeat=args.repeat, timeout=args.timeout)
        finally:
            redis.stop()
    print_summary(result, args.workers, args.concurrency)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
