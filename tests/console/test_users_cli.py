"""`lumbar-node users add|list` as an operator runs it, and the corrected findings a
corrected report is built from."""

from __future__ import annotations

import os
import subprocess
import sys

import _harness
from sqlalchemy import select

from dicom_node.db import migrate
from dicom_node.db.models import AuditEvent, Review, User
from dicom_node.db.session import make_engine, make_sessionmaker


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMBAR_NODE_")}
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=120)


def test_users_add_from_file_and_stdin_then_list(tmp_path):
    with _harness.throwaway_database(prefix="lumbar_console_test_") as url:
        migrate.upgrade(url)
        secret = tmp_path / "pw"
        secret.write_text("a-long-password\n")
        done = _cli("users", "add", "alice", "--role", "admin", "--password-file", str(secret),
                    "--database-url", url)
        assert done.returncode == 0, done.stderr
        done = _cli("users", "add", "bob", "--role", "radiologist", "--database-url", url,
                    stdin="another-password\n")
        assert done.returncode == 0, done.stderr
        assert _cli("users", "add", "bob", "--role", "radiologist", "--database-url", url,
                    stdin="another-password\n").returncode == 1  # taken
        short = _cli("users", "add", "carol", "--role", "radiologist", "--database-url", url,
                     stdin="short\n")
        assert short.returncode == 1 and "at least 10" in short.stderr
        bad_role = _cli("users", "add", "dave", "--role", "root", "--database-url", url,
                        stdin="another-password\n")
        assert bad_role.returncode == 2
        listing = _cli("users", "list", "--database-url", url)
        assert listing.returncode == 0
        lines = listing.stdout.splitlines()
        assert lines[1].split()[:2] == ["alice", "admin"]
        assert lines[2].split()[:2] == ["bob", "radiologist"]
        engine = make_engine(url)
        try:
            with make_sessionmaker(engine)() as s:
                alice = s.scalar(select(User).where(User.name == "alice"))
                added = list(s.scalars(select(AuditEvent).where(
                    AuditEvent.event_type == "user.added")))
        finally:
            engine.dispose()
        assert alice.password_hash.startswith("$argon2id$")
        assert "a-long-password" not in alice.password_hash
        assert [e.detail["user"] for e in added] == ["alice", "bob"]


def test_corrections_become_the_radiologists_grade_with_the_node_as_second_opinion():
    from test_reviews import _findings_doc

    from workers.corrected_report import apply_reviews

    document = _findings_doc()
    reviews = {
        "spinal_canal_stenosis_l4_l5": Review(id=7, verdict="correct", corrected_value="Moderate",
                                              reviewer="rad", comment="tight but not severe"),
        "spinal_canal_stenosis_l3_l4": Review(id=8, verdict="confirm", reviewer="rad"),
        "left_subarticular_stenosis_l5_s1": Review(id=9, verdict="correct",
                                                   corrected_value="Severe", reviewer="rad"),
        "disc_herniation_l4_l5": Review(id=10, verdict="correct", corrected_value="absent",
                                        reviewer="rad"),
    }
    corrected = apply_reviews(document, reviews)
    by = {(f["condition"], f["side"], f["level"]): f for f in corrected["findings"]}
    canal = by[("spinal_canal_stenosis", None, "L4-L5")]
    assert canal["grade"] == "Moderate" and canal["grader"] == "radiologist"
    assert canal["probabilities"] is None and canal["model_version"] == "review-7"
    assert canal["second_opinion"]["grade"] == "Severe"
    assert canal["review"]["reasons"] == ["corrected by radiologist rad (tight but not severe)"]
    assert by[("spinal_canal_stenosis", None, "L3-L4")]["review"] == {
        "required": False, "reasons": ["confirmed by radiologist rad"]}
    recess = by[("subarticular_stenosis", "left", "L5-S1")]
    assert recess["assessable"] and recess["grade"] == "Severe" and recess["reason"] is None
    assert recess["second_opinion"]["withdrawn"] == "no axial T2 at this level"
    assert corrected["disc_findings"][0]["herniation"]["present"] is False
    assert corrected["review_required"] == 0
    assert document["findings"] != corrected["findings"]  # the stored document is untouched
    untouched = by[("spinal_canal_stenosis", None, "L1-L2")]
    assert untouched["grader"] == "measurement" and untouched["grade"] == "Normal/Mild"
