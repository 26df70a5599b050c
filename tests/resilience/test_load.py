"""Concurrent associations, each study split across two of them and some instances sent
twice: stored once, processed once, results delivered once."""

from __future__ import annotations

from pathlib import Path

import load


def test_concurrent_associations_store_and_deliver_exactly_once(tmp_path: Path,
                                                                  make_stack) -> None:
    studies = load.make_studies(tmp_path / "studies", 4, matrix=64, synthetic=True)
    stack = make_stack(tmp_path / "s", workers=1, settle_seconds=1.0,
                       study_timeout_seconds=10.0).start()
    result = load.run_load(stack, studies, concurrency=8, split=2, repeat=0.2, timeout=400)
    assert result["problems"] == []
    assert result["associations"] == 8
    assert result["sent_instances"] > result["instances"]  # the repeats went out too
    # every study reached an end once, and its outcome is recorded either way
    assert sum(result["jobs"].values()) == 4
    for entry in result["report"].values():
        assert entry["live_jobs"] == 1
        assert entry["result_sops"] or entry["job_reason"] or entry["result_status"]
