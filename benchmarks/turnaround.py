"""Turnaround: from the last instance received to the last result acknowledged by the PACS,
split into the stages the node records.

    .venv/bin/python benchmarks/turnaround.py --batch 20 --workers 1,2

Stages per study: settle (last instance -> study closed), queue (job created -> started by a
worker), the pipeline's own stage timings from the job row (select, assemble, segment,
levels, measure, grade, build objects ...), record (pipeline end -> job finished: indexing
results, findings rows) and deliver (job finished -> PACS acknowledged the C-STORE). When
the pipeline produced nothing to deliver, the study's end is its job's end and the table
says so. "N workers" are N analysis workers; deliveries have one io worker of their own, as
in deploy/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness
import load


def _aware(dt: datetime | None) -> datetime | None:
    from datetime import UTC

    return dt if dt is None or dt.tzinfo else dt.replace(tzinfo=UTC)


def stage_times(stack: _harness.Stack, uids: Sequence[str]) -> list[dict[str, Any]]:
    """One row per study: seconds per stage, read back from studies/jobs/deliveries."""
    from sqlalchemy import select

    from dicom_node.db.models import Delivery, Job, Study

    rows = []
    with stack.sessions() as session:
        for uid in uids:
            study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
            job = session.scalar(select(Job).where(Job.study_id == study.id,
                                                   Job.superseded_by.is_(None)))
            delivered = session.scalars(select(Delivery.delivered_at).where(
                Delivery.job_id == job.id, Delivery.delivered_at.is_not(None))).all()
            last_in = _aware(study.last_received_at)
            closed, created = _aware(study.closed_at), _aware(job.created_at)
            started, finished = _aware(job.started_at), _aware(job.finished_at)
            end = max(_aware(d) for d in delivered) if delivered else finished
            pipeline = {k: float(v) for k, v in (job.stage_timings or {}).items()
                        if isinstance(v, int | float)}
            row: dict[str, Any] = {
                "settle": (closed - last_in).total_seconds(),
                "queue": (started - created).total_seconds(),
                **pipeline,
                "record": max(0.0, (finished - started).total_seconds()
                              - sum(pipeline.values())),
                "deliver": (end - finished).total_seconds() if delivered else None,
                "total": (end - last_in).total_seconds(),
                "last_in": last_in, "end": end, "delivered": bool(delivered),
                "outcome": f"{job.state}/{job.result_status}",
            }
            rows.append(row)
    return rows


def run_batch(work: Path, studies: Sequence[Sequence[Path]], workers: int, db_url: str,
              redis_url: str, senders: int = 4, timeout: float = 3600) -> list[dict[str, Any]]:
    with _harness.Stack(work, db_url, redis_url, workers=workers, loglevel="WARNING",
                        settle_seconds=2.0, study_timeout_seconds=30.0,
                        io_worker=True) as stack:
        with ThreadPoolExecutor(max_workers=senders) as pool:
            list(pool.map(stack.send, studies))
        uids = [load.study_uid(f) for f in studies]

        def done() -> bool:
            return load.settled(load.outcome(stack.sessions, uids))

        _harness.wait_for(done, timeout, "every study to settle", interval=0.5)
        return stage_times(stack, uids)


def summarise(label: str, rows: list[dict[str, Any]]) -> None:
    fixed = {"last_in", "end", "delivered", "outcome"}
    stages = [k for k in rows[0] if k not in fixed]
    for row in rows[1:]:
        stages += [k for k in row if k not in fixed and k not in stages]
    wall = (max(r["end"] for r in rows) - max(r["last_in"] for r in rows)).total_seconds()
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    print(f"\n{label}: {len(rows)} studies; last instance -> last result {wall:.1f} s; "
          f"outcomes {outcomes}; delivered {sum(r['delivered'] for r in rows)}")
    print(f"  {'stage':<16} {'median s':>9} {'mean s':>9} {'max s':>9}")
    for stage in stages:
        values = [r[stage] for r in rows if r.get(stage) is not None]
        if values:
            print(f"  {stage:<16} {statistics.median(values):>9.2f} "
                  f"{statistics.fmean(values):>9.2f} {max(values):>9.2f}")
    if not any(r["delivered"] for r in rows):
        print("  (nothing delivered: a study's end is its job's end)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.workers.split(",") if c.strip()]
    if args.batch < 1 or not counts or min(counts) < 1:
        parser.error("--batch and every --workers count must be >= 1")
    with tempfile.TemporaryDirectory(prefix="lumbar-turnaround-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        studies = load.make_studies(args.cache or work / "studies", args.batch + 1,
                                    args.matrix, True)
        print(f"{args.batch + 1} synthetic studies ({args.matrix}px) ready in "
              f"{time.perf_counter() - t0:.0f} s")
        redis = _harness.RedisServer(work / "redis").start()
        try:
            runs = [("1 study, 1 worker", studies[:1], 1)]
            runs += [(f"{args.batch} studies, {n} worker(s)", studies[1:], n) for n in counts]
            for i, (label, batch, workers) in enumerate(runs):
                with _harness.throwaway_database() as db_url:
                    rows = run_batch(work / f"run{i}", batch, workers, db_url, redis.url)
                summarise(label, rows)
        finally:
            redis.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
