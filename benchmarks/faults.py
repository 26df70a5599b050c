"""Faults while studies arrive: a worker killed mid-study, Redis and PostgreSQL restarted,
serve killed with acknowledged instances not yet indexed, the destination PACS down and back.
Afterwards no instance may be lost, no study stuck, and no result delivered twice.

    .venv/bin/python benchmarks/faults.py --studies 3 --pacs-down 120

Redis and PostgreSQL are private servers started here (a redis-server without persistence,
an initdb cluster), never the machine's shared ones.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness
import load

#: the reconciler's deadline for a job without heartbeat; above the worker's 30 s heartbeat
#: interval so a healthy long job is never taken for a dead one
STALE_S = 40


def _settle(stack: _harness.Stack, uids: list[str], timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        report = load.outcome(stack.sessions, uids)
        return report if load.settled(report) else None

    try:
        return _harness.wait_for(done, timeout, "every study to settle", interval=0.5)
    except TimeoutError:
        return load.outcome(stack.sessions, uids)


def _finish(name: str, stack: _harness.Stack, studies: Sequence[Sequence[Path]],
            fault_at: float, timeout: float, **extra: Any) -> dict[str, Any]:
    expected = {load.study_uid(files): len(files) for files in studies}
    report = _settle(stack, list(expected), timeout)
    recovered = time.perf_counter() - fault_at
    pacs = stack.pacs.sop_uids() if stack.pacs is not None else None
    problems = load.violations(report, expected, pacs) + load.spool_problems(stack)
    if not load.settled(report):
        problems.append("not every study settled before the timeout: " + ", ".join(
            f"{(e or {}).get('state')}/{(e or {}).get('job_state')}" for e in report.values()))
    return {"scenario": name, "problems": problems, "recovered_s": recovered,
            "report": report, "results_at_pacs": len(pacs or ()),
            "delivered": sum(e["deliveries"].count("delivered") for e in report.values() if e),
            **extra}


def _audit_count(stack: _harness.Stack, event_type: str) -> int:
    from sqlalchemy import func, select

    from dicom_node.db.models import AuditEvent

    with stack.sessions() as session:
        return int(session.scalar(select(func.count(AuditEvent.id)).where(
            AuditEvent.event_type == event_type)) or 0)


def worker_kill(work: Path, studies: Sequence[Sequence[Path]], db_url: str, redis_url: str,
                timeout: float = 600) -> dict[str, Any]:
    """SIGKILL the worker while a job runs; a fresh worker must finish the study once."""
    from sqlalchemy import select

    from dicom_node.db.models import Job

    with _harness.Stack(work, db_url, redis_url, workers=1, job_stale_seconds=STALE_S) as stack:
        spare = _harness.Worker(stack.config, work / "logs", name="spare")
        try:
            for files in studies:
                stack.send(files)

            def running() -> bool:
                with stack.sessions() as session:
                    return session.scalar(select(Job.id).where(Job.state == "running")) \
                        is not None

            _harness.wait_for(running, timeout, "a job to start", interval=0.02)
            stack.workers[0].kill9()
            fault_at = time.perf_counter()
            hit = running()
            spare.start()
            result = _finish("worker kill -9", stack, studies, fault_at, timeout,
                             killed_running=hit)
            result["requeued"] = _audit_count(stack, "job.requeued")
            if hit and result["requeued"] < 1:
                result["problems"].append("the killed job was never re-queued")
            return result
        finally:
            spare.stop()


def redis_restart(work: Path, studies: Sequence[Sequence[Path]], db_url: str,
                  down_s: float = 3.0, timeout: float = 600) -> dict[str, Any]:
    """Redis (no persistence: queued messages are lost) restarts while studies arrive."""
    redis = _harness.RedisServer(work / "redis").start()
    try:
        with _harness.Stack(work / "stack", db_url, redis.url, workers=1) as stack:
            stack.send(studies[0])
            sender = threading.Thread(target=lambda: [stack.send(f) for f in studies[1:]])
            sender.start()
            redis.restart(down_seconds=down_s)
            fault_at = time.perf_counter()
            sender.join()
            return _finish("redis restart", stack, studies, fault_at, timeout)
    finally:
        redis.stop()


def redis_loses_queued(work: Path, studies: Sequence[Sequence[Path]], db_url: str,
                       stale_s: int = 10, wait_s: float = 30.0) -> dict[str, Any]:
    """A job's message is in Redis, not yet taken by any worker, when Redis restarts without
    persistence. Does the job still start once a worker is back?"""
    from sqlalchemy import select

    from dicom_node.db.models import OutboxMessage

    redis = _harness.RedisServer(work / "redis").start()
    try:
        with _harness.Stack(work / "stack", db_url, redis.url, workers=0,
                            job_stale_seconds=stale_s) as stack:
            stack.send(studies[0])

            def dispatched() -> bool:
                with stack.sessions() as session:
                    return session.scalar(select(OutboxMessage.id).where(
                        OutboxMessage.dispatched_at.is_not(None))) is not None

            _harness.wait_for(dispatched, 60, "the job's message to reach Redis")
            redis.restart(down_seconds=1.0)
            fault_at = time.perf_counter()
            worker = _harness.Worker(stack.config, work / "logs", name="late").start()
            try:
                uid = load.study_uid(studies[0])

                def started() -> bool:
                    entry = load.outcome(stack.sessions, [uid])[uid]
                    return bool(entry) and entry["job_state"] != "queued"

                try:
                    _harness.wait_for(started, wait_s, "the job to start", interval=0.5)
                    problems = []
                except TimeoutError:
                    problems = [f"job still queued {wait_s:.0f} s after Redis came back: its "
                                "message was lost and nothing re-queues a queued job"]
                return {"scenario": "redis loses queued", "problems": problems,
                        "recovered_s": time.perf_counter() - fault_at, "delivered": 0,
                        "results_at_pacs": 0,
                        "report": load.outcome(stack.sessions, [uid])}
            finally:
                worker.stop()
    finally:
        redis.stop()


def postgres_restart(work: Path, studies: Sequence[Sequence[Path]], redis_url: str,
                     down_s: float = 3.0, timeout: float = 600,
                     senders: int = 2, split: int = 3) -> dict[str, Any]:
    """PostgreSQL goes down in the middle of a multi-association load and comes back.

    The node acknowledges from the spool, so no association may be refused and nothing
    sent again: every instance must be indexed once, after the database returns."""
    cluster = _harness.PgCluster().init()
    try:
        with _harness.Stack(work / "stack", cluster.url, redis_url, workers=1,
                            job_stale_seconds=STALE_S) as stack:
            port, spool = stack.config.dimse_port, stack.config.spool
            batches = load.associations(studies, split, 0.0)
            refused: list[str] = []
            started = threading.Event()

            def send(files: Sequence[Path]) -> None:
                done = _harness.storescu(port, files)
                started.set()
                if done.returncode != 0:
                    refused.append(done.stderr[-300:])

            def send_all() -> None:
                with ThreadPoolExecutor(senders) as pool:
                    list(pool.map(send, batches))

            sender = threading.Thread(target=send_all)
            sender.start()
            started.wait(120)
            cluster.stop("immediate")
            fault_at = time.perf_counter()
            spooled_at_stop = len(_harness.spool_files(spool))
            time.sleep(down_s)
            spooled_while_down = len(_harness.spool_files(spool)) - spooled_at_stop
            cluster.start()
            sender.join()
            return _finish("postgres restart", stack, studies, fault_at, timeout,
                           refused=len(refused), associations=len(batches),
                           spooled_while_down=spooled_while_down)
    finally:
        cluster.remove()


def serve_killed(work: Path, studies: Sequence[Sequence[Path]], redis_url: str,
                 timeout: float = 600) -> dict[str, Any]:
    """``kill -9`` of serve in the middle of a study, with instances acknowledged and not
    yet indexed (the database was away while they came), then a restart: the startup sweep
    must index every acknowledged instance, and every study must be processed."""
    cluster = _harness.PgCluster().init()
    try:
        with _harness.Stack(work / "stack", cluster.url, redis_url, workers=1,
                            job_stale_seconds=STALE_S) as stack:
            first = list(studies[0])
            half = len(first) // 2
            stack.send(first[:half])
            cluster.stop("immediate")
            stack.send(first[half:])  # acknowledged from the spool, not indexed
            unindexed = len(first) - half
            stack.node.kill9()
            fault_at = time.perf_counter()
            cluster.start()
            stack.node.start()
            for files in studies[1:]:
                stack.send(files)
            return _finish("serve killed", stack, studies, fault_at, timeout,
                           acknowledged_unindexed=unindexed)
    finally:
        cluster.remove()


def pacs_down(work: Path, studies: Sequence[Sequence[Path]], db_url: str, redis_url: str,
              down_s: float = 20.0, timeout: float = 600) -> dict[str, Any]:
    """The destination PACS is down while results are ready, then comes back.

    It stays down for ``down_s`` and in any case until every job has finished and a send
    has really failed: on a busy machine the delivery task can still be queued behind an
    analysis when ``down_s`` ends, and a PACS back by then would prove nothing."""
    with _harness.Stack(work, db_url, redis_url, workers=1) as stack:
        assert stack.pacs is not None
        stack.pacs.stop()
        down_at = time.perf_counter()
        for files in studies:
            stack.send(files)
        report = _settle_until(stack, studies, timeout)
        time.sleep(max(0.0, down_s - (time.perf_counter() - down_at)))
        if any(e and e["deliveries"] for e in report.values()):
            _harness.wait_for(lambda: _audit_count(stack, "delivery.failed") >= 1, timeout,
                              "a delivery to fail while the PACS is down", interval=0.5)
        stack.pacs.start()
        fault_at = time.perf_counter()
        result = _finish("PACS down", stack, studies, fault_at, timeout)
        result["failed_attempts"] = _audit_count(stack, "delivery.failed")
        result["deliveries_created"] = sum(len(e["deliveries"]) for e in report.values() if e)
        return result


def _settle_until(stack: _harness.Stack, studies: Sequence[Sequence[Path]],
                  seconds: float) -> dict[str, Any]:
    """Wait (at most ``seconds``) until every job has finished, while the PACS is away."""
    uids = [load.study_uid(f) for f in studies]

    def jobs_done() -> dict[str, Any] | None:
        report = load.outcome(stack.sessions, uids)
        return report if all(e and e["job_state"] in ("done", "failed")
                             for e in report.values()) else None

    try:
        return _harness.wait_for(jobs_done, seconds, "jobs to finish", interval=0.5)
    except TimeoutError:
        return load.outcome(stack.sessions, uids)


def print_results(results: list[dict[str, Any]]) -> None:
    print(f"{'scenario':<18} {'recovered s':>11} {'delivered':>9} {'at PACS':>8} "
          f"{'violations':>10}  notes")
    for r in results:
        notes = {k: v for k, v in r.items() if k not in (
            "scenario", "problems", "recovered_s", "report", "results_at_pacs", "delivered")}
        print(f"{r['scenario']:<18} {r['recovered_s']:>11.1f} {r['delivered']:>9} "
              f"{r['results_at_pacs']:>8} {len(r['problems']):>10}  {notes}")
        for problem in r["problems"][:10]:
            print(f"    {problem}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=3)
    parser.add_argument("--matrix", type=int, default=64)
    parser.add_argument("--pacs-down", type=float, default=120.0, help="seconds")
    parser.add_argument("--only", default="",
                        help="comma-separated: kill,redis,redis-lost,postgres,serve-kill,pacs")
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.studies < 2:
        parser.error("--studies must be at least 2 (one before the fault, one during)")
    with tempfile.TemporaryDirectory(prefix="lumbar-faults-") as tmp:
        work = Path(tmp)
        studies = load.make_studies(args.cache or work / "studies", args.studies,
                                    args.matrix, True)
        redis = _harness.RedisServer(work / "redis").start()
        results = []
        scenarios: dict[str, Callable[[Path, str], dict[str, Any]]] = {
            "kill": lambda w, db: worker_kill(w, studies[:1], db, redis.url),
            "redis": lambda w, db: redis_restart(w, studies, db),
            "redis-lost": lambda w, db: redis_loses_queued(w, studies, db),
            "postgres": lambda w, db: postgres_restart(w, studies, redis.url),
            "serve-kill": lambda w, db: serve_killed(w, studies, redis.url),
            "pacs": lambda w, db: pacs_down(w, studies, db, redis.url, args.pacs_down),
        }
        chosen = set(filter(None, args.only.split(","))) or set(scenarios)
        try:
            for name, scenario in scenarios.items():
                if name in chosen:
                    with _harness.throwaway_database() as db_url:
                        results.append(scenario(work / name, db_url))
        finally:
            redis.stop()
    print_results(results)
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
