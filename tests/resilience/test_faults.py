"""Faults while studies arrive (scaled down from benchmarks/faults.py): afterwards no
instance lost, no study stuck, no result delivered twice."""

from __future__ import annotations

from pathlib import Path

import faults
import load
import pytest


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    return load.make_studies(tmp_path_factory.mktemp("fault-studies"), 2, 64, True)


def test_worker_killed_mid_study_is_rerun_once(tmp_path, studies, database_url, redis_server):
    result = faults.worker_kill(tmp_path, studies[:1], database_url, redis_server.url,
                                timeout=240)
    assert result["problems"] == []
    assert result["killed_running"], "the kill should land while the job runs"
    assert result["requeued"] >= 1
    entry = next(iter(result["report"].values()))
    assert entry["job_attempts"] >= 2  # the killed run, then the re-run


def test_redis_restart_while_studies_arrive(tmp_path, studies, database_url):
    result = faults.redis_restart(tmp_path, studies, database_url, down_s=2.0, timeout=240)
    assert result["problems"] == []
    assert all(e["job_state"] in ("done", "failed") for e in result["report"].values())


def test_postgres_restart_while_studies_arrive(tmp_path, studies, redis_server):
    """A private cluster stopped in the middle of a multi-association load: nothing refused,
    nothing lost, nothing doubled, every study processed."""
    result = faults.postgres_restart(tmp_path, studies, redis_server.url, down_s=2.0,
                                     timeout=240)
    assert result["problems"] == []
    assert result["refused"] == 0
    assert result["spooled_while_down"] > 0, "the outage should land while studies arrive"
    assert sum(e["instances"] for e in result["report"].values()) == sum(map(len, studies))


def test_serve_killed_mid_study_then_restarted(tmp_path, studies, redis_server):
    """kill -9 with acknowledged instances not indexed yet: the startup sweep indexes them
    and both studies are processed."""
    result = faults.serve_killed(tmp_path, studies, redis_server.url, timeout=240)
    assert result["problems"] == []
    assert result["acknowledged_unindexed"] > 0
    assert sum(e["instances"] for e in result["report"].values()) == sum(map(len, studies))


def test_pacs_down_then_back(tmp_path, studies, database_url, redis_server):
    result = faults.pacs_down(tmp_path, studies, database_url, redis_server.url, down_s=15.0,
                              timeout=240)
    assert result["problems"] == []
    # a study the pipeline cannot turn into result objects is a failure here, not a skip:
    # without deliveries the PACS outage proves nothing
    reasons = {e["job_reason"] for e in result["report"].values()}
    assert result["deliveries_created"] >= 1, f"no result objects to deliver: {reasons}"
    assert result["failed_attempts"] >= 1  # the PACS really was down for a while
    assert result["results_at_pacs"] == sum(len(e["result_sops"])
                                            for e in result["report"].values())


def test_job_message_lost_with_redis_is_republished(tmp_path, studies, database_url):
    """The job's message sat in Redis, untaken, when Redis restarted without persistence."""
    result = faults.redis_loses_queued(tmp_path, studies, database_url, wait_s=30.0)
    assert result["problems"] == []
    entry = next(iter(result["report"].values()))
    assert entry["job_state"] != "queued" and entry["job_attempts"] >= 1
