"""How fast a PACS can route studies to the node, against storescp and the pynetdicom floor.

The deployed question behind the ingest figures: Orthanc (the PACS of deploy/) holds the
studies and sends them with its own C-STORE SCU (``/modalities/{name}/store``, ``--jobs``
routing jobs at once, one association per study), to each receiver in turn, in the same
run. A receiver that keeps up adds nothing to the PACS's routing time.

    .venv/bin/python benchmarks/routing.py --studies 16 --jobs 2 --rounds 3 --processes 1,2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness
import ingest
import pynetdicom_floor

from dicom_node.config import NodeConfig

sys.path.insert(0, str(_harness.REPO / "tests" / "deploy"))
from orthanc import NODE_MODALITY, Modality, OrthancServer


def node_name(processes: int) -> str:
    return ingest.NODE if processes == 1 else f"{ingest.NODE} x{processes}"


def route(pacs: OrthancServer, modality: str, studies: Sequence[str], jobs: int,
          instances: int, count: Callable[[], int]) -> dict[str, float]:
    def one(study: str) -> None:
        response = pacs.client.post(f"/modalities/{modality}/store", timeout=600,
                                    json={"Resources": [study], "Synchronous": True})
        response.raise_for_status()

    def route_all() -> None:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, studies))

    return ingest.timed(modality, instances, route_all, count)


def run(studies: int, size: int, per_series: int, jobs: int, rounds: int,
        workdir: Path, processes: Sequence[int] = (1,)) -> list[dict[str, dict[str, float]]]:
    os.environ["TCP_NODELAY"] = "1"
    data = ingest.make_studies(workdir / "studies", studies, size, per_series)
    instances = sum(len(s) for s in data)
    results: list[dict[str, dict[str, float]]] = []
    redis = _harness.RedisServer(workdir / "redis").start()
    scp = _harness.Storescp(workdir / "storescp", ae_title="STORESCP")
    floor = ingest.PynetdicomFloor(workdir / "floor")
    try:
        scp.start()
        floor.start()
        node_port = _harness.free_port()
        modalities = {"sender": Modality("PACS", "127.0.0.1", _harness.free_port()),
                      "storescp": Modality("STORESCP", "127.0.0.1", scp.port),
                      "floor": Modality(pynetdicom_floor.AE_TITLE, "127.0.0.1", floor.port)}
        node = Modality(NodeConfig.ae_title, "127.0.0.1", node_port)
        pacs = OrthancServer(workdir / "orthanc", destination=node, aet="PACS",
                             stable_age=3600, extra_modalities=modalities)
        # a routing job runs on one of Orthanc's job threads: as many threads as jobs
        pacs.config["ConcurrentJobs"] = max(jobs, pacs.config.get("ConcurrentJobs", 2))
        with pacs:
            ingest.send_all(pacs.dicom_port, data, pacs.aet, 2)
            ids = list(pacs.get_json("/studies"))
            for i in range(rounds):
                this: dict[str, dict[str, float]] = {}
                received = len(scp.files())
                this["storescp"] = route(pacs, "storescp", ids, jobs, instances,
                                         lambda before=received: len(scp.files()) - before)
                seen = floor.received()
                this["pynetdicom floor"] = route(pacs, "floor", ids, jobs, instances,
                                                 lambda before=seen: floor.received() - before)
                for count in processes:
                    with _harness.throwaway_database() as db_url:
                        stack = _harness.Stack(workdir / f"node{i}x{count}", db_url, redis.url,
                                               workers=0, pacs=False, loglevel="WARNING",
                                               settle_seconds=30.0, dimse_port=node_port,
                                               dimse_processes=count)
                        with stack:
                            this[node_name(count)] = route(
                                pacs, NODE_MODALITY, ids, jobs, instances,
                                lambda spool=stack.config.spool: len(
                                    _harness.spool_files(spool)))
                results.append(this)
    finally:
        floor.stop()
        scp.stop()
        redis.stop()
    return results


def print_table(rounds: list[dict[str, dict[str, float]]], jobs: int) -> None:
    print(f"Orthanc routing with {jobs} jobs at once ({len(rounds)} rounds, medians; "
          "CPU: whole machine, Orthanc included)")
    print(f"{'receiver':<18} {'inst/s':>8} {'min':>7} {'max':>7} {'CPU ms/inst':>11}")
    for name in rounds[0]:
        rates = [r[name]["inst_s"] for r in rounds]
        cpu = statistics.median(r[name]["cpu_ms"] for r in rounds)
        print(f"{name:<18} {statistics.median(rates):>8.1f} {min(rates):>7.1f} "
              f"{max(rates):>7.1f} {cpu:>11.2f}")
    for name in (n for n in rounds[0] if n.startswith(ingest.NODE)):
        for other in ("storescp", "pynetdicom floor"):
            ingest.print_ratio(rounds, name, other)
    ingest.print_ratio(rounds, "pynetdicom floor", "storescp")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="image matrix (pixels)")
    parser.add_argument("--per-series", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=2, help="routing jobs at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", default="1",
                        help="node runs with these DIMSE_PROCESSES, comma-separated")
    args = parser.parse_args(argv)
    if min(args.studies, args.per_series, args.jobs, args.rounds) < 1 or args.size < 8:
        parser.error("--studies, --per-series, --jobs, --rounds must be >= 1, --size >= 8")
    with tempfile.TemporaryDirectory(prefix="lumbar-routing-") as tmp:
        results = run(args.studies, args.size, args.per_series, args.jobs, args.rounds,
                      Path(tmp), processes=[int(n) for n in args.processes.split(",")])
    print_table(results, args.jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
