"""What the SR and the key image tell about each graded disc: Pfirrmann grade, Modic type,
the findings present with their probabilities, who graded it, and why a disc was not
graded."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sr_reading import sr_groups

sys.path.insert(0, str(Path(__file__).parent))
from test_reports_study import SPACING, make_study
from test_reports_trust import trust_findings

from models.reports import write_results
from models.reports.keyimage.render import PFIRRMANN_RGB, disc_cells, render
from models.reports.sr.discs import DISC_GRADER_KIND

VERSION = "disc@2026.12.05-test"


def _binary(present: bool, p: float) -> dict:
    return {"present": present, "probability": p}


def disc_entry(level: str, grade: int, modic: int, present: tuple[str, ...] = ()) -> dict:
    entry = {
        "level": level,
        "pfirrmann": {"grade": grade, "probabilities": [0.0] * 5},
        "modic": {"type": modic, "probabilities": [0.0] * 4},
        "assessable": True,
        "reason": None,
        "model_version": VERSION,
        "ood": {"flagged": False, "score": 1.0, "threshold": 1.6, "reason": None},
    }
    entry["pfirrmann"]["probabilities"][grade - 1] = 0.7
    entry["modic"]["probabilities"][modic] = 0.6
    for key in ("narrowing", "herniation", "bulging", "spondylolisthesis",
                "endplate_upper", "endplate_lower"):
        entry[key] = _binary(key in present, 0.8 if key in present else 0.1)
    return entry


NOT_ASSESSABLE = {
    "level": "L5-S1", "pfirrmann": None, "modic": None, "narrowing": None, "herniation": None,
    "bulging": None, "spondylolisthesis": None, "endplate_upper": None, "endplate_lower": None,
    "assessable": False, "reason": "disc not segmented on the mid-sagittal slices",
    "model_version": VERSION,
    "ood": {"flagged": False, "score": 0.0, "threshold": 1.6, "reason": None},
}


def disc_findings() -> list[dict]:
    return [
        disc_entry("L1-L2", 2, 0),
        disc_entry("L2-L3", 3, 0, ("bulging",)),
        disc_entry("L3-L4", 4, 2, ("bulging", "narrowing")),
        disc_entry("L4-L5", 5, 1, ("herniation", "narrowing", "endplate_lower")),
        copy.deepcopy(NOT_ASSESSABLE),
    ]


@pytest.fixture(scope="module")
def discs(tmp_path_factory):
    root = tmp_path_factory.mktemp("discs")
    anatomy, files, labels = make_study(root)
    findings = trust_findings(anatomy.volumes["sag_t2"])
    findings["models"]["disc_grader"] = {"name": "disc", "version": "2026.12.05-test"}
    findings["disc_findings"] = disc_findings()
    out = write_results(findings, anatomy, files, root / "out")
    sr = pydicom.dcmread(out["sr"])
    return {"anatomy": anatomy, "labels": labels, "findings": findings, "out": out, "sr": sr}


def _by_meaning(items) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "CODE":
            out[name] = item.ConceptCodeSequence[0].CodeMeaning
        elif item.ValueType == "TEXT":
            out[name] = item.TextValue
        elif item.ValueType == "NUM":
            out[name] = float(item.MeasuredValueSequence[0].NumericValue)
    return out


def _disc_groups(sr) -> dict[str, list]:
    return {text: items for text, items in sr_groups(sr).items() if " disc" in text}


def test_one_group_per_disc_with_grade_modic_and_findings(discs):
    groups = _disc_groups(discs["sr"])
    assert len(groups) == 5
    assert len(sr_groups(discs["sr"])) == 25 + 5 + 5  # findings, level measurements, discs
    text = "L4-L5 disc: Pfirrmann 5, Modic 1; disc space narrowing, disc herniation, " \
           "lower endplate defect"
    items = _by_meaning(groups[text])
    assert items["Pfirrmann grade"] == "Pfirrmann grade V"
    assert items["Modic type"] == "Modic type 1 change"
    assert items["Disc herniation"] == "Present"
    assert items["Disc bulging"] == "Absent"
    assert items["Probability of disc herniation"] == pytest.approx(0.8)
    assert items["Probability of disc bulging"] == pytest.approx(0.1)
    assert items["Probability of Pfirrmann grade"] == pytest.approx(0.7)
    assert items["Kind of grader"] == DISC_GRADER_KIND
    assert items["Deciding grader"] == "Learned grader"
    site = next(i for i in groups[text]
                if i.ConceptNameCodeSequence[0].CodeMeaning == "Finding Site")
    assert site.ConceptCodeSequence[0].CodeValue == "84020006"  # SCT L4/L5 disc
    assert site.ConceptCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert items["Algorithm Name"] == "disc"
    assert items["Algorithm Version"] == "2026.12.05-test"
    mild = _by_meaning(groups["L1-L2 disc: Pfirrmann 2, Modic 0"])
    assert mild["Modic type"] == "No Modic change"
    assert mild["Disc space narrowing"] == "Absent"


def test_a_disc_that_was_not_graded_carries_its_reason(discs):
    items = _disc_groups(discs["sr"])["L5-S1 disc: not assessable"]
    named = _by_meaning(items)
    assert named["Reason not assessable"] == NOT_ASSESSABLE["reason"]
    assert "Pfirrmann grade" not in named
    assert not [i for i in items if i.ValueType == "NUM"]


def test_disc_codes_are_in_the_declared_private_scheme(discs):
    sr = discs["sr"]
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99LUMBAR"
    items = _disc_groups(sr)["L3-L4 disc: Pfirrmann 4, Modic 2; disc space narrowing, " \
                             "disc bulging"]
    grade = next(i for i in items if i.ConceptNameCodeSequence[0].CodeMeaning == "Pfirrmann grade")
    assert grade.ConceptNameCodeSequence[0].CodingSchemeDesignator == "99LUMBAR"
    assert grade.ConceptCodeSequence[0].CodeValue == "LDISC-PFIRR-4"


def test_invalid_disc_grade_is_refused(discs, tmp_path):
    bad = copy.deepcopy(discs["findings"])
    bad["disc_findings"][0]["pfirrmann"]["grade"] = 7
    with pytest.raises(ValueError, match="Pfirrmann"):
        write_results(bad, discs["anatomy"], {}, tmp_path)
    bad = copy.deepcopy(discs["findings"])
    bad["disc_findings"][4]["reason"] = None
    with pytest.raises(ValueError, match="reason"):
        write_results(bad, discs["anatomy"], {}, tmp_path)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_sr_with_discs_passes_dciodvfy(discs):
    result = subprocess.run(["dciodvfy", "-new", str(discs["out"]["sr"])], capture_output=True,
                            text=True, timeout=60, check=False)
    assert [x for x in result.stderr.splitlines() if x.startswith("Error")] == []


def test_key_image_shows_the_disc_table(discs):
    findings = discs["findings"]
    volume = discs["anatomy"].volumes["sag_t2"]
    mid = volume.array.shape[0] // 2
    pixels, labels = volume.array[mid], discs["labels"][mid]
    plain = render(pixels, labels, SPACING, findings["findings"])
    with_discs = render(pixels, labels, SPACING, findings["findings"],
                        discs=findings["disc_findings"])
    assert with_discs.shape[0] > plain.shape[0]
    assert with_discs.shape[1] == plain.shape[1]
    # the Pfirrmann V cell is drawn in its colour below the stenosis table
    table = with_discs[plain.shape[0] - 60 :]
    assert np.all(table == PFIRRMANN_RGB[5], axis=2).sum() > 100
    assert disc_cells(findings["disc_findings"][3]) == ("5", "1", "Narr Hern EPl")
    assert disc_cells(findings["disc_findings"][0]) == ("2", "0", "none")
    assert disc_cells(findings["disc_findings"][4])[:2] == ("n/a", "n/a")


def _corrected_group(tmp_path, corrections: dict) -> dict[str, list]:
    anatomy, files, _ = make_study(tmp_path)
    findings = trust_findings(anatomy.volumes["sag_t2"])
    findings["models"]["disc_grader"] = {"name": "disc", "version": "2026.12.05-test"}
    discs = disc_findings()
    l34 = discs[2]
    for name, value in corrections.items():
        l34[name] = {**value, "grader": "radiologist", "model_version": "review-7"}
    l34["review"] = {"required": False, "reasons": ["Pfirrmann grade corrected by radiologist rad"]}
    findings["disc_findings"] = discs
    sr = pydicom.dcmread(write_results(findings, anatomy, files, tmp_path / "out")["sr"])
    groups = _disc_groups(sr)
    return next(items for text, items in groups.items() if text.startswith("L3-L4"))


def _all_meanings(items) -> list[tuple[str, object]]:
    return [(k, v) for item in items for k, v in _by_meaning([item]).items()]


def test_a_radiologists_correction_is_credited_to_the_radiologist(tmp_path):
    items = _all_meanings(_corrected_group(tmp_path, {
        "pfirrmann": {"grade": 5, "probabilities": None}}))
    graders = [v for k, v in items if k == "Deciding grader"]
    assert "Learned grader" in graders and "radiologist grader" in graders
    assert ("Kind of grader", "radiologist review: pfirrmann") in items
    assert ("Reason for review", "Pfirrmann grade corrected by radiologist rad") in items
    assert ("Pfirrmann grade", "Pfirrmann grade V") in items


def test_a_disc_wholly_set_by_the_radiologist_names_no_model(tmp_path):
    every = {"pfirrmann": {"grade": 3, "probabilities": None},
             "modic": {"type": 0, "probabilities": None}}
    every.update({k: {"present": False, "probability": None} for k in (
        "narrowing", "herniation", "bulging", "spondylolisthesis", "endplate_upper",
        "endplate_lower")})
    items = _all_meanings(_corrected_group(tmp_path, every))
    assert [v for k, v in items if k == "Deciding grader"] == ["radiologist grader"]
    names = {k for k, _ in items}
    assert "Algorithm Name" not in names and "Training data" not in names
