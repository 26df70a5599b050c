"""The commands as an operator runs them: `serve` as a process, `db`, `audit`, `resend`."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

from _harness import wait_for
from nodekit import storescu, wait_port, write_study
from sqlalchemy import select

from dicom_node.db.models import Study
from workers.env import config_env


def _cli(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_serve_process_receives_and_audit_tells_the_story(tmp_path, node_config,
                                                          sessions):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMBAR_NODE_")}
    env.update(config_env(node_config.replace(scheduler_interval_seconds=0.2)))
    assert _cli(env, "db", "upgrade").returncode == 0
    serve = subprocess.Popen([sys.executable, "-m", "workers.cli", "serve", "--loglevel",
                              "WARNING"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        wait_port(node_config.dimse_port)
        uid, files = write_study(tmp_path / "s", n=6)
        assert storescu(node_config.dimse_port, files).returncode == 0
        assert storescu(node_config.dimse_port, files[:1], "INTRUDER").returncode != 0

        def closed():
            with sessions() as s:
                return s.scalar(select(Study.state).where(
                    Study.study_instance_uid == uid)) == "queued"

        wait_for(closed, 30, "the study to be closed")
        rows = json.loads(_cli(env, "audit", "--study", uid, "--format", "json").stdout)
    finally:
        serve.terminate()
        output = serve.communicate(timeout=20)[0]
    assert serve.returncode == 0, output
    assert "NODE0001" not in output  # no patient ID in the log
    types = [r["event_type"] for r in rows]
    assert types[0] == "study.first_instance" and types.count("instance.stored") == 18
    closed_event = next(r for r in rows if r["event_type"] == "study.closed")
    assert closed_event["detail"]["reason"].startswith("complete")
    assert set(closed_event["detail"]["roles"]) == {"sag_t1", "sag_t2", "ax_t2"}

    table = _cli(env, "audit", "--study", uid).stdout
    assert "study.closed" in table and "instance.stored" in table
    rejected = list(csv.DictReader(io.StringIO(_cli(
        env, "audit", "--event-type", "association.rejected", "--format", "csv").stdout)))
    assert [r["ae_title"] for r in rejected] == ["INTRUDER"]
    audited = json.loads(_cli(env, "audit", "--event-type", "audit.queried",
                              "--format", "json").stdout)
    assert len(audited) >= 3
    none = _cli(env, "resend", "--study", uid)
    assert none.returncode == 1 and "no finished analysis" in none.stderr
    bad = _cli(env, "audit", "--since", "yesterday")
    assert bad.returncode == 2 and "not an ISO time" in bad.stderr
    assert _cli(env, "db", "check").returncode == 0


def test_audit_on_a_missing_or_unmigrated_database_says_what_to_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMBAR_NODE_")}
    env["LUMBAR_NODE_DATA_DIR"] = str(tmp_path / "var")
    missing = _cli(env, "audit")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "no database at" in missing.stderr and "db upgrade" in missing.stderr
    assert not (tmp_path / "var").exists()  # nothing created by asking
    empty = tmp_path / "empty.sqlite"
    import sqlite3

    sqlite3.connect(empty).execute("CREATE TABLE unrelated (a)").connection.close()
    unmigrated = _cli(env, "audit", "--database-url", f"sqlite:///{empty}")
    assert unmigrated.returncode == 2 and "not migrated" in unmigrated.stderr
    assert "Traceback" not in unmigrated.stderr


def test_analyze_on_a_folder_without_dicom_names_what_it_skipped(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.bin").write_bytes(b"not dicom")
    result = _cli(dict(os.environ), "analyze", str(tmp_path / "in"), "--out",
                  str(tmp_path / "out"))
    assert result.returncode == 2
    assert "no DICOM files found" in result.stderr and "notes.bin" in result.stderr
    assert "results in" not in result.stdout
