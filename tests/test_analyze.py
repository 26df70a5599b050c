"""`analyze_study` and `lumbar-node analyze` end to end on synthetic studies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from synth_truth import TruthSegmenter, truth

from lumbar_common.vocabulary import LEVELS, finding_keys, rsna_key
from models.pipeline import STAGES, analyze_study

COMPLETE = dict(seed=3, matrix=128)
SAG_ONLY = dict(seed=5, variants=["missing_sag_t1", "missing_ax_t2", "stir"], matrix=128)
BRAIN = dict(seed=4, variants=["non_lumbar"], matrix=128)


def _files(study: Path) -> list[Path]:
    return sorted((study / "dicom").rglob("*.dcm"))


@pytest.fixture(scope="module")
def complete(synth_study, tmp_path_factory):
    study = synth_study(**COMPLETE)
    out = tmp_path_factory.mktemp("analyze_complete")
    return study, out, analyze_study(_files(study), out, device="cpu",
                                     segmenter=TruthSegmenter(study))


def test_complete_study(complete):
    study, out, findings = complete
    t = truth(study)
    assert findings["status"] == "complete", findings["reason"]
    assert findings == json.loads((out / "findings.json").read_text())
    assert findings["study_instance_uid"] == t["study_instance_uid"]
    assert {s["role"] for s in findings["series"] if s["used"]} == {"sag_t1", "sag_t2", "ax_t2"}
    assert [lv["level"] for lv in findings["levels"]] == list(LEVELS)
    for lv in findings["levels"]:
        ref = np.array(t["levels"][lv["level"]]["disc_centre_lps"])
        assert np.linalg.norm(np.array(lv["disc_centre_lps"]) - ref) < 3.0
        names = {m["name"] for m in lv["measurements"]}
        assert {"canal_ap_diameter", "disc_height_anterior", "disc_height_posterior"} <= names
    assert findings["level_labelling"] == {"anchor": "sacrum", "ambiguous": False,
                                           "warnings": []}
    keys = [(f["condition"], f["side"], f["level"]) for f in findings["findings"]]
    assert sorted(keys, key=str) == sorted(finding_keys(), key=str)
    assert set(findings["rsna"]) == {rsna_key(*k) for k in finding_keys()}
    for probs in findings["rsna"].values():
        assert len(probs) == 3 and abs(sum(probs) - 1.0) < 1e-3
    assert findings["models"]["segmentation"]["name"] == "synthetic-reference-labels"
    assert set(findings["timings_s"]) == set(STAGES)


def test_complete_study_result_objects(complete):
    _, out, findings = complete
    assert (out / "overlay.png").stat().st_size > 1000
    for name in ("sr.dcm", "seg_sag_t2.dcm", "keyimage.dcm", "ko.dcm"):
        ds = pydicom.dcmread(out / name)
        assert ds.StudyInstanceUID == findings["study_instance_uid"]
    assert set(findings["outputs"].values()) >= {"sr.dcm", "seg_sag_t2.dcm", "overlay.png"}


def test_sagittal_stir_only_study_is_partial(synth_study, tmp_path):
    study = synth_study(**SAG_ONLY)
    findings = analyze_study(_files(study), tmp_path, device="cpu",
                             segmenter=TruthSegmenter(study))
    assert findings["status"] == "partial" and findings["reason"] is None
    assert [lv["level"] for lv in findings["levels"]] == list(LEVELS)
    assert all(lv["measurements"] for lv in findings["levels"])
    unassessable = [f for f in findings["findings"] if not f["assessable"]]
    assert unassessable and all(f["reason"] for f in unassessable)
    assert (tmp_path / "seg_sag_stir.dcm").exists()


def test_non_lumbar_study_is_rejected(synth_study, tmp_path):
    study = synth_study(**BRAIN)
    findings = analyze_study(_files(study), tmp_path, device="cpu",
                             segmenter=TruthSegmenter(study))
    assert findings["status"] == "rejected"
    assert "not a lumbar spine study" in findings["reason"]
    assert findings["findings"] == [] and findings["levels"] == []
    assert json.loads((tmp_path / "findings.json").read_text())["status"] == "rejected"


def test_unreadable_input_is_rejected(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 64)
    findings = analyze_study([junk], tmp_path / "out", device="cpu")
    assert findings["status"] == "rejected" and findings["reason"] == "no readable DICOM files"
    assert "junk.dcm" in findings["warnings"][0]


def test_cli_rejects_and_reports(synth_study, tmp_path, capsys):
    from workers.cli import main

    study = synth_study(**BRAIN)
    assert main(["analyze", str(study), "--out", str(tmp_path), "--quiet"]) == 1
    assert "rejected" in capsys.readouterr().out
    assert main(["analyze", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2


def test_missing_segmentation_model_is_a_clear_error(synth_study, tmp_path, monkeypatch, capsys):
    from models.pipeline import PipelineError
    from workers.cli import main

    monkeypatch.setenv("LUMBAR_NODE_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    study = synth_study(**COMPLETE)
    with pytest.raises(PipelineError, match="segmentation model cannot be loaded"):
        analyze_study(_files(study), tmp_path / "out", device="cpu")
    assert main(["analyze", str(study), "--out", str(tmp_path / "cli"), "--quiet"]) == 3
    assert "segmentation model cannot be loaded" in capsys.readouterr().err


@pytest.mark.slow
def test_registered_segmenter_end_to_end(synth_study, tmp_path):
    """The real network in the pipeline: levels named and placed as in the truth."""
    from models.pipeline import PipelineError, load_segmenter

    try:
        segmenter = load_segmenter("cpu")
    except PipelineError as exc:
        pytest.skip(f"no registered segmentation model here: {exc}")
    study = synth_study(seed=3, matrix=256)
    findings = analyze_study(_files(study), tmp_path, device="cpu", segmenter=segmenter)
    t = truth(study)
    assert findings["status"] in ("complete", "partial"), findings["reason"]
    assert [lv["level"] for lv in findings["levels"]] == list(LEVELS)
    for lv in findings["levels"]:
        ref = np.array(t["levels"][lv["level"]]["disc_centre_lps"])
        assert np.linalg.norm(np.array(lv["disc_centre_lps"]) - ref) < 5.0, lv["level"]
