"""Many PACS associations at once: is every instance stored once, every study processed and
every result delivered to the PACS exactly once?

    .venv/bin/python benchmarks/load.py --studies 50 --concurrency 16 --workers 2

Each study goes over its own association (``--split 2`` sends each study as two concurrent
associations, racing on the same study row); ``--repeat`` sends that fraction of the
instances a second time, which must be acknowledged and stored once. The run ends when every
study has settled (or ``--timeout``) and prints the numbers and every broken promise.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness

SEED = 4242


def _make(args: tuple[Path, int, int, bool]) -> list[Path]:
    folder, seed, matrix, synthetic = args
    return _harness.write_study(folder, seed, matrix=matrix, synthetic=synthetic)


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
        report = _harness.outcome(stack.sessions, list(expected))
        return report if _harness.settled(report) else None

    try:
        report = _harness.wait_for(done, timeout, "every study to settle", interval=1.0)
    except TimeoutError:
        report = _harness.outcome(stack.sessions, list(expected))
    settled_at = time.perf_counter()
    pacs_uids = stack.pacs.sop_uids() if stack.pacs is not None else None
    problems = _harness.violations(report, expected, pacs_uids)
    problems += spool_problems(stack)
    if not _harness.settled(report):
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
