"""``lumbar-node synth`` as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _synth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workers.cli", "synth", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_a_study_and_prints_one_summary_line(tmp_path):
    out = tmp_path / "study"
    run = _synth("--out", str(out), "--seed", "21", "--matrix", "96", "--axial", "stack",
                 "--grades", "spinal_canal_stenosis_l3_l4=Moderate", "--variant", "localizer",
                 "--preview")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synth seed=21")
    truth = json.loads((out / "truth.json").read_text())
    assert truth["rsna"]["spinal_canal_stenosis_l3_l4"] == "Moderate"
    assert truth["axial_mode"] == "stack" and "localizer" in truth["series"]
    assert (out / "preview.png").is_file()
    for key in ("sag_t1", "sag_t2"):
        assert (out / truth["series"][key]["label_file"]).is_file()
    assert all((out / f).is_file() for e in truth["series"].values() for f in e["files"])


def test_cli_refuses_a_bad_grade_by_name(tmp_path):
    run = _synth("--out", str(tmp_path / "x"), "--grades", "spinal_canal_stenosis_l4_l5=Bad")
    assert run.returncode == 2 and "Bad" in run.stderr and "Traceback" not in run.stderr
    assert not Path(tmp_path / "x" / "truth.json").exists()
