"""Ingest rate of `lumbar-node serve` against dcmtk storescp and Orthanc, same files, same run.

Every peer receives over loopback from the same client (dcmtk storescu, one association per
study, TCP_NODELAY=1 for every dcmtk peer including Orthanc's embedded dcmtk), one peer after
the other. The node runs as in production: PostgreSQL index, Redis broker, spool with
fsync; storescp only writes files; Orthanc writes files and its SQLite index. The
"pynetdicom floor" is the node's DIMSE framing with nothing stored
(benchmarks/pynetdicom_floor.py): the rate no pynetdicom receiver can pass on this machine.

    .venv/bin/python benchmarks/ingest.py --studies 16 --senders 2 --processes 1,2 --rounds 3

Side by side in one run, for measuring one change at a time: ``--senders 1,4`` runs every
peer with each sender count; ``--peers`` picks the peers; ``--floor-chunked`` adds the floor
with pynetdicom's STORE_RECV_CHUNKED_DATASET; ``--baseline REV`` adds the node as it was at
git revision REV (its tree extracted to a temporary folder and run from there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness
import load
import pynetdicom_floor

NODE = "lumbar-node"
PEERS = ("storescp", "floor", "orthanc", "node")


class PynetdicomFloor(_harness.Process):
    """benchmarks/pynetdicom_floor.py: the node's DIMSE framing without storing anything."""

    def __init__(self, workdir: Path, chunked: bool = False) -> None:
        self.port = _harness.free_port()
        super().__init__("pynetdicom floor", [
            _harness.PYTHON, str(Path(pynetdicom_floor.__file__)), str(self.port),
            *(["--chunked"] if chunked else [])], workdir / "floor.log")

    def start(self) -> PynetdicomFloor:
        super().start()
        self.await_ready(lambda: _harness.port_open(self.port), 30, "the pynetdicom floor")
        return self

    def received(self) -> int:
        return sum(1 for line in self.log.read_text().splitlines() if line.isdigit())


def make_studies(folder: Path, studies: int, size: int, per_series: int) -> list[list[Path]]:
    return [load.plain_study(folder / f"study{i:03d}", seed=1000 + i, size=size,
                                 per_series=per_series) for i in range(studies)]


def send_all(port: int, studies: Sequence[Sequence[Path]], called: str, senders: int) -> float:
    """Seconds to send every study (one association each) with ``senders`` in parallel."""
    def one(files: Sequence[Path]) -> None:
        done = _harness.storescu(port, files, calling="PACS", called=called)
        if done.returncode != 0:
            raise RuntimeError(f"storescu to {called} failed: {done.stderr[-600:]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=senders) as pool:
        list(pool.map(one, studies))
    return time.perf_counter() - start


def measure(name: str, port: int, called: str, studies: Sequence[Sequence[Path]],
            senders: int, count: Callable[[], int]) -> dict[str, float]:
    instances = sum(len(s) for s in studies)
    megabytes = sum(p.stat().st_size for s in studies for p in s) / 1e6
    result = timed(name, instances, lambda: send_all(port, studies, called, senders), count)
    return {**result, "mb_s": megabytes / result["seconds"]}


def timed(name: str, instances: int, send: Callable[[], object],
          count: Callable[[], int]) -> dict[str, float]:
    """Rate and whole-machine CPU of one ``send``, once the receiver holds every instance."""
    busy, start = machine_cpu_seconds(), time.perf_counter()
    send()
    seconds = time.perf_counter() - start
    busy = machine_cpu_seconds() - busy
    if (held := count()) != instances:
        raise RuntimeError(f"{name} holds {held} instances after receiving {instances}")
    return {"seconds": seconds, "instances": instances, "inst_s": instances / seconds,
            "cpu_ms": busy / instances * 1e3}


def machine_cpu_seconds() -> float:
    """CPU time the whole machine spent busy (all cores): receiver, its database, senders.

    Rates alone hide what a peer costs when the cores are shared; CPU per instance says
    how many cores each one needs for a given rate.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def one_round(data: Sequence[Sequence[Path]], senders: int, workdir: Path,
              processes: Sequence[int], peers: Sequence[str] = PEERS,
              floor_chunked: bool = False,
              baseline: tuple[str, Path] | None = None) -> dict[str, dict[str, float]]:
    """Every peer once, each with fresh state (a re-sent instance would be a duplicate)."""
    sys.path.insert(0, str(_harness.REPO / "tests" / "deploy"))
    from orthanc import Modality, OrthancServer

    results: dict[str, dict[str, float]] = {}
    if "storescp" in peers:
        with _harness.Storescp(workdir / "storescp", ae_title="STORESCP") as scp:
            scp.start()
            results["storescp"] = measure("storescp", scp.port, "STORESCP", data, senders,
                                          lambda: len(scp.files()))

    floors = [("pynetdicom floor", False)] if "floor" in peers else []
    floors += [("floor, chunked recv", True)] if floor_chunked else []
    for name, chunked in floors:
        with PynetdicomFloor(workdir / name.replace(" ", "_"), chunked) as floor:
            floor.start()
            results[name] = measure(name, floor.port, pynetdicom_floor.AE_TITLE, data,
                                    senders, floor.received)

    if "orthanc" in peers:
        nowhere = Modality("NOWHERE", "127.0.0.1", _harness.free_port())
        sender = {"sender": Modality("PACS", "127.0.0.1", _harness.free_port())}
        with OrthancServer(workdir / "orthanc", destination=nowhere, stable_age=3600,
                           extra_modalities=sender) as pacs:
            results["orthanc"] = measure(
                "orthanc", pacs.dicom_port, pacs.aet, data, senders,
                lambda: int(pacs.get_json("/statistics")["CountInstances"]))

    if "node" not in peers:
        return results
    redis = _harness.RedisServer(workdir / "redis").start()
    nodes = [(NODE if count == 1 else f"{NODE} x{count}", count, None) for count in processes]
    if baseline is not None:
        nodes.append((f"{NODE}@{baseline[0]}", 1, baseline[1]))
    try:
        for name, count, tree in nodes:
            with _harness.throwaway_database() as db_url:
                stack = _harness.Stack(workdir / name.replace(" ", "_"), db_url, redis.url,
                                       workers=0, pacs=False, loglevel="WARNING",
                                       settle_seconds=30.0, dimse_processes=count)
                if tree is not None:  # the same settings, another revision's code
                    stack.node.cwd = tree
                with stack:
                    results[name] = measure(
                        name, stack.config.dimse_port, stack.config.ae_title, data, senders,
                        lambda spool=stack.config.spool: len(_harness.spool_files(spool)))
    finally:
        redis.stop()
    return results


def extract_revision(rev: str, folder: Path) -> Path:
    """The tree of git revision ``rev`` in ``folder`` (no checkout, no worktree)."""
    import subprocess

    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=_harness.REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run(studies: int, size: int, per_series: int, senders: int, workdir: Path,
        processes: Sequence[int] = (1,), rounds: int = 1, peers: Sequence[str] = PEERS,
        floor_chunked: bool = False,
        baseline: str | None = None) -> list[dict[str, dict[str, float]]]:
    """``rounds`` rounds of every peer one after the other: on a shared machine the load
    changes within a minute, and interleaving keeps each round's ratios comparable."""
    os.environ["TCP_NODELAY"] = "1"  # inherited by Orthanc (dcmtk inside) and storescu
    data = make_studies(workdir / "studies", studies, size, per_series)
    tree = (baseline, extract_revision(baseline, workdir / "baseline")) if baseline else None
    return [one_round(data, senders, workdir / f"round{i}", processes, peers, floor_chunked,
                      tree) for i in range(rounds)]


def print_table(rounds: list[dict[str, dict[str, float]]]) -> None:
    """Median over rounds; the ratio is the median of the per-round ratios."""
    names = list(rounds[0])
    print(f"{'peer':<24} {'instances':>9} {'inst/s':>8} {'min':>7} {'max':>7} {'MB/s':>7}"
          f" {'CPU ms/inst':>11}   ({len(rounds)} rounds; CPU: whole machine, senders included)")
    for name in names:
        rates = [r[name]["inst_s"] for r in rounds]
        mbs = statistics.median(r[name]["mb_s"] for r in rounds)
        cpu = statistics.median(r[name]["cpu_ms"] for r in rounds)
        print(f"{name:<24} {rounds[0][name]['instances']:>9.0f} "
              f"{statistics.median(rates):>8.1f} {min(rates):>7.1f} {max(rates):>7.1f} "
              f"{mbs:>7.1f} {cpu:>11.2f}")
    for name in (n for n in names if n.startswith(NODE) or "floor" in n):
        for other in ("orthanc", "storescp", "pynetdicom floor"):
            if other != name and other in names:
                print_ratio(rounds, name, other)


def print_ratio(rounds: list[dict[str, dict[str, float]]], name: str, other: str) -> None:
    """The median of the per-round ratios of two receivers' rates, and each round's."""
    ratios = [r[name]["inst_s"] / r[other]["inst_s"] for r in rounds]
    print(f"{name} / {other}: {statistics.median(ratios):.2f} "
          f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="image matrix (pixels)")
    parser.add_argument("--per-series", type=int, default=15)
    parser.add_argument("--senders", default="2",
                        help="parallel storescu; comma-separated runs each count side by side")
    parser.add_argument("--processes", default="1,2",
                        help="node runs with these DIMSE_PROCESSES, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every peer")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"comma-separated, of {', '.join(PEERS)}")
    parser.add_argument("--floor-chunked", action="store_true",
                        help="add the floor with pynetdicom's STORE_RECV_CHUNKED_DATASET")
    parser.add_argument("--baseline", metavar="REV",
                        help="add the node as of this git revision, side by side")
    args = parser.parse_args(argv)
    senders = [int(n) for n in args.senders.split(",")]
    peers = [p for p in args.peers.split(",") if p]
    if min(args.studies, *senders, args.per_series, args.rounds) < 1 or args.size < 8:
        parser.error("--studies, --senders, --per-series, --rounds must be >= 1, --size >= 8")
    if unknown := set(peers) - set(PEERS):
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="lumbar-ingest-") as tmp:
        tables = {count: run(args.studies, args.size, args.per_series, count,
                             Path(tmp) / f"senders{count}",
                             processes=[int(n) for n in args.processes.split(",")],
                             rounds=args.rounds, peers=peers,
                             floor_chunked=args.floor_chunked, baseline=args.baseline)
                  for count in senders}
    for count, results in tables.items():
        print(f"\n--- {count} sender{'s' if count > 1 else ''} ---")
        print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
