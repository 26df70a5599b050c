"""What the result objects tell a radiologist about each finding: who decided the grade,
whether it needs review and why, what the other grader said, which measurements are its
evidence, the notice, the full model names and every vertebra in view."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from sr_reading import sr_groups

sys.path.insert(0, str(Path(__file__).parent))
from test_reports_study import SERIES_UID, make_findings, make_study

from lumbar_common.vocabulary import SPIDER_PARTIAL_OFFSET, rsna_key
from models.levels import disc_label, vertebra_label
from models.reports import write_results
from models.reports.equipment import short_lo
from models.reports.keyimage.render import REVIEW_RGB, cell_lines
from models.reports.seg.codes import SEGMENT_KINDS
from models.reports.sr.codes import DEFAULT_PROCEDURE, NOTICE

LONG_NAME = "lumbar-stenosis-grader-2.5d-resnet18-ensemble-of-five-calibrated-temperature-0.7"
DISAGREE = "spinal_canal_stenosis_l4_l5"
WITHDRAWN = "left_neural_foraminal_narrowing_l3_l4"
EXPLAINED = "right_subarticular_stenosis_l2_l3"


def _measurement(name: str, value: float, unit: str, **extra) -> dict:
    return {"name": name, "value": value, "unit": unit, "series_instance_uid": SERIES_UID,
            "slice": 3, **extra}


def trust_findings(volume) -> dict:
    """findings.json with the provenance, review and evidence keys the graders now write."""
    findings = make_findings(volume)
    findings["notice"] = NOTICE
    findings["models"]["grader_measurement"] = {"name": "lumbar-node-measurement-grader",
                                                "version": "1.2"}
    findings["models"]["grader_learned"]["name"] = LONG_NAME
    evidence = {
        "spinal_canal_stenosis": [_measurement("canal_ap_diameter", 7.5, "mm"),
                                  _measurement("canal_area", 95.0, "mm2")],
        "neural_foraminal_narrowing": [_measurement("perineural_fat_fraction", 0.31, "1")],
        "subarticular_stenosis": [_measurement("lateral_recess_patency", 0.55, "1")],
    }
    for finding in findings["findings"]:
        key = rsna_key(finding["condition"], finding["side"], finding["level"])
        finding.update(
            grader="measurement",
            model_version="1.2",
            grader_kind="rule-based: published thresholds on measurements",
            training_data="segmentation trained on real SPIDER MRI + synthetic studies; "
                          "thresholds from literature",
            # a grader that wrongly lists a midline disc height: never shown as evidence
            measurements=copy.deepcopy(evidence[finding["condition"]])
            + [_measurement("disc_height_anterior", 8.0, "mm")],
            second_opinion=None,
            disagreement=None,
            review={"required": False, "reasons": []},
            ood={"flagged": False, "reasons": []},
        )
        if key == DISAGREE:
            finding.update(grade="Moderate", probabilities=[0.1, 0.8, 0.1])
            finding["second_opinion"] = {
                "grader": "learned", "grader_kind": "learned: trained on synthetic studies only",
                "grade": "Severe", "probabilities": [0.05, 0.15, 0.8],
                "model_version": "2.0", "withdrawn": None}
            finding["disagreement"] = {"bands": 1,
                                       "grades": {"measurement": "Moderate", "learned": "Severe"}}
            finding["review"] = {"required": True, "reasons": [
                "graders disagree by 1 band (measurement Moderate, learned Severe)"]}
        if key == WITHDRAWN:
            finding["second_opinion"] = {
                "grader": "learned", "grader_kind": "learned: trained on synthetic studies only",
                "grade": None, "probabilities": None, "model_version": "2.0",
                "withdrawn": "crop out of distribution (score 3.2 > 2.5)"}
            finding["review"] = {"required": True, "reasons": [
                "segmentation out of distribution at this level: disc area"]}
            finding["ood"] = {"flagged": True, "reasons": [
                "segmentation out of distribution at this level: disc area",
                "crop out of distribution (score 3.2 > 2.5)"]}
        if key == EXPLAINED:  # a learned decision explained by the measurement grader
            finding.update(grader="learned", model_version="2.0",
                           grader_kind="learned: trained on synthetic studies only",
                           measurements=None)
            finding["explanation"] = {
                "grader": "measurement", "grade": "Severe", "probabilities": [0.1, 0.1, 0.8],
                "measurements": [_measurement("lateral_recess_patency", 0.2, "1")]}
    findings["review_required"] = 2
    levels = {record["level"]: record for record in findings["levels"]}
    levels["L4-L5"]["measurements"].append(
        _measurement("listhesis", -3.1, "mm", direction="retrolisthesis"))
    levels["L5-S1"]["measurements"].append(
        _measurement("listhesis", 4.2, "mm", direction="anterolisthesis"))
    levels["L3-L4"]["measurements"].append(_measurement("anterolisthesis", -0.8, "mm"))
    levels["L2-L3"]["warnings"] = [
        "vertebral_body_height withheld: outside the physiological range (10–45 mm)"]
    return findings


@pytest.fixture(scope="module")
def trust(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    anatomy, files, _ = make_study(root)
    findings = trust_findings(anatomy.volumes["sag_t2"])
    out = write_results(findings, anatomy, files, root / "out")
    sr = pydicom.dcmread(out["sr"])
    return {"anatomy": anatomy, "files": files, "findings": findings, "out": out, "sr": sr,
            "groups": sr_groups(sr)}


def _named(items, meaning: str) -> list:
    return [i for i in items if i.ConceptNameCodeSequence[0].CodeMeaning == meaning]


def _value(item):
    if item.ValueType == "TEXT":
        return item.TextValue
    if item.ValueType == "CODE":
        return item.ConceptCodeSequence[0].CodeMeaning
    if item.ValueType == "NUM":
        return float(item.MeasuredValueSequence[0].NumericValue)
    return None


def _group(trust, prefix: str) -> list:
    matches = [items for text, items in trust["groups"].items() if text.startswith(prefix)]
    assert len(matches) == 1, (prefix, list(trust["groups"]))
    return matches[0]


def test_each_group_names_the_deciding_grader_its_kind_and_training_data(trust):
    items = _group(trust, "L1-L2 canal:")
    assert [_value(i) for i in _named(items, "Deciding grader")] == [
        "Measurement grader (rule-based)"]
    assert [_value(i) for i in _named(items, "Kind of grader")] == [
        "rule-based: published thresholds on measurements"]
    assert "real SPIDER MRI" in _value(_named(items, "Training data")[0])
    assert [_value(i) for i in _named(items, "Radiologist review required")] == ["No"]
    assert _value(_named(items, "Algorithm Name")[0]) == "lumbar-node-measurement-grader"


def test_disagreement_shows_both_grades_bands_and_second_opinion(trust):
    text = next(t for t in trust["groups"] if t.startswith("L4-L5 canal:"))
    assert text == "L4-L5 canal: moderate [review: learned severe]"
    items = trust["groups"][text]
    severity = [i for i in items if _named_meaning(i).startswith("severity")]
    assert [_value(i) for i in severity] == ["Moderate"]
    assert _value(_named(items, "Radiologist review required")[0]) == "Yes"
    assert [_value(i) for i in _named(items, "Reason for review")] == [
        "graders disagree by 1 band (measurement Moderate, learned Severe)"]
    assert _value(_named(items, "Grade by measurement grader")[0]) == "Moderate"
    assert _value(_named(items, "Grade by learned grader")[0]) == "Severe"
    bands = _named(items, "Grade difference between graders")[0]
    assert _value(bands) == 1.0
    unit = bands.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
    assert unit.CodeValue == "{bands}"
    assert _value(_named(items, "Second opinion grade")[0]) == "Severe"
    assert _value(_named(items, "Second opinion probabilities")[0]) == (
        "Normal/Mild 0.05, Moderate 0.15, Severe 0.80")
    grader = _value(_named(items, "Second opinion grader")[0])
    assert "learned" in grader and "synthetic studies only" in grader and "2.0" in grader


def test_a_withdrawn_second_opinion_says_why_and_shows_no_grade(trust):
    items = _group(trust, "L3-L4 left foramen:")
    assert [_value(i) for i in _named(items, "Second opinion withdrawn")] == [
        "crop out of distribution (score 3.2 > 2.5)"]
    assert not _named(items, "Second opinion grade")
    assert not _named(items, "Second opinion probabilities")
    # the OOD reason already given as the reason for review is not repeated
    assert [_value(i) for i in _named(items, "Reason for review")] == [
        "segmentation out of distribution at this level: disc area"]
    assert [_value(i) for i in _named(items, "Out of distribution")] == [
        "crop out of distribution (score 3.2 > 2.5)"]


def _nums(items) -> dict[str, float]:
    return {i.ConceptNameCodeSequence[0].CodeMeaning: _value(i)
            for i in items if i.ValueType == "NUM"}


def test_each_group_shows_only_its_own_evidence(trust):
    canal = _nums(_group(trust, "L2-L3 canal:"))
    assert canal == {"Probability": pytest.approx(0.8), "Diameter": 7.5, "Area": 95.0}
    foramen = _nums(_group(trust, "L2-L3 right foramen:"))
    assert set(foramen) == {"Probability", "Perineural fat fraction"}
    assert foramen["Perineural fat fraction"] == pytest.approx(0.31)
    subarticular = _nums(_group(trust, "L1-L2 left subarticular:"))
    assert set(subarticular) == {"Probability", "Lateral recess patency"}
    # no finding group repeats the midline disc heights
    for text, items in trust["groups"].items():
        if "level measurements" not in text:
            assert "Height" not in _nums(items), text
    # the foramen's evidence is sited at its side of the level
    fat = next(i for i in _group(trust, "L2-L3 right foramen:")
               if i.ConceptNameCodeSequence[0].CodeMeaning == "Perineural fat fraction")
    site = fat.ContentSequence[0]
    assert site.ConceptCodeSequence[0].CodeMeaning == "Level of L2/L3 intervertebral disc"
    assert site.ContentSequence[0].ConceptCodeSequence[0].CodeMeaning == "Right"


def test_explanation_of_a_learned_decision_is_rendered(trust):
    items = _group(trust, "L2-L3 right subarticular:")
    assert _value(_named(items, "Deciding grader")[0]) == "Learned grader"
    assert _value(_named(items, "Measurement grader grade (explanation)")[0]) == "Severe"
    assert _nums(items)["Lateral recess patency"] == pytest.approx(0.2)
    assert _value(_named(items, "Algorithm Name")[0]) == LONG_NAME


def test_level_groups_hold_morphometry_and_listhesis_by_direction(trust):
    l45 = _nums(_group(trust, "L4-L5 level measurements"))
    assert l45["Retrolisthesis"] == pytest.approx(3.1) and "Anterolisthesis" not in l45
    assert _nums(_group(trust, "L5-S1 level measurements"))["Anterolisthesis"] == (
        pytest.approx(4.2))
    # the older name "anterolisthesis" with a negative value is a retrolisthesis too
    assert _nums(_group(trust, "L3-L4 level measurements"))["Retrolisthesis"] == (
        pytest.approx(0.8))
    for text, items in trust["groups"].items():
        for item in items:
            if item.ValueType == "NUM" and "listhesis" in _named_meaning(item):
                assert _value(item) >= 0, text
    notes = _named(_group(trust, "L2-L3 level measurements"), "Measurement note")
    assert [_value(n) for n in notes] == [
        "vertebral_body_height withheld: outside the physiological range (10–45 mm)"]


def _named_meaning(item) -> str:
    return item.ConceptNameCodeSequence[0].CodeMeaning.lower()


def test_sr_carries_the_notice_procedure_and_full_model_names(trust):
    sr = trust["sr"]
    root = next(i for i in sr.ContentSequence
                if i.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations")
    texts = {}
    for item in root.ContentSequence:
        texts.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item.TextValue)
    assert texts["Notice"] == ["AI result \u2014 not for diagnosis without review by a radiologist"]
    assert texts["Findings needing review"] == ["2 of 25 findings need review by a radiologist"]
    assert f"grader_learned: {LONG_NAME} version 2.0" in texts["Algorithm full name"]
    procedure = next(i for i in sr.ContentSequence
                     if i.ConceptNameCodeSequence[0].CodeMeaning == "Procedure reported")
    code = procedure.ConceptCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "24968-0", "LN", "MR Lumbar spine")
    # the highdicom reader still reads the report
    report = hd.sr.srread(trust["out"]["sr"])
    assert len(report.content.get_image_measurement_groups()) == len(trust["groups"])


def _loinc_check_digit(number: str) -> int:
    """LOINC's mod-10 check digit: odd positions from the right doubled, digits summed."""
    odd = number[::-1][0::2][::-1]
    even = number[::-1][1::2][::-1]
    digits = even + str(int(odd) * 2)
    return (10 - sum(int(d) for d in digits) % 10) % 10


def test_procedure_code_is_a_valid_loinc_code():
    number, check = DEFAULT_PROCEDURE.value.split("-")
    assert _loinc_check_digit(number) == int(check)
    assert _loinc_check_digit("25056") == 3  # the code it replaces, as a control


def test_long_model_names_reach_the_sr_whole_and_stay_distinct_in_lo(trust):
    sr = trust["sr"]
    equipment = {e.ContributionDescription: e for e in sr.ContributingEquipmentSequence
                 if e.Manufacturer == "lumbar-node"}
    learned = equipment[f"grader_learned model: {LONG_NAME} 2.0"]
    assert len(LONG_NAME) > 64 and len(learned.ManufacturerModelName) <= 64
    assert learned.ManufacturerModelName == short_lo(LONG_NAME)
    assert short_lo(LONG_NAME) != short_lo(LONG_NAME[:-1] + "8")
    assert short_lo("lumbar-seg") == "lumbar-seg"
    observer = sr.ContentSequence
    names = [i.TextValue for i in observer if i.ValueType == "TEXT"
             and i.ConceptNameCodeSequence[0].CodeMeaning == "Device Observer Model Name"]
    assert names and "grader_learned" not in names[0] and LONG_NAME in names[0]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
@pytest.mark.parametrize("name", ["sr", "seg_sag_t2", "keyimage"])
def test_objects_with_trust_items_pass_dciodvfy(trust, name):
    result = subprocess.run(["dciodvfy", "-new", str(trust["out"][name])], capture_output=True,
                            text=True, timeout=60, check=False)
    assert [x for x in result.stderr.splitlines() if x.startswith("Error")] == []


def _short(finding: dict) -> str:
    return {"Normal/Mild": "N/M", "Moderate": "Mod", "Severe": "Sev"}[finding["grade"]]


def test_key_image_marks_review_and_shows_both_grades(trust):
    findings = trust["findings"]["findings"]
    by_key = {rsna_key(f["condition"], f["side"], f["level"]): f for f in findings}
    assert cell_lines(by_key[DISAGREE]) == ("Mod M", "L: Sev")
    assert cell_lines(by_key[WITHDRAWN]) == (_short(by_key[WITHDRAWN]) + " M", "review")
    assert cell_lines(by_key["spinal_canal_stenosis_l1_l2"]) == ("N/M M", "")
    assert cell_lines(by_key[EXPLAINED])[0] == _short(by_key[EXPLAINED]) + " L"
    key = pydicom.dcmread(trust["out"]["keyimage"])
    assert (np.all(key.pixel_array == REVIEW_RGB, axis=2)).sum() > 100
    assert key.ImageComments == "AI result - not for diagnosis without review by a radiologist"
    # without review there is no review frame
    calm = copy.deepcopy(trust["findings"])
    for finding in calm["findings"]:
        finding["review"] = {"required": False, "reasons": []}
    out = write_results(calm, trust["anatomy"], trust["files"],
                        Path(trust["out"]["sr"]).parent / "calm")
    assert not (np.all(pydicom.dcmread(out["keyimage"]).pixel_array == REVIEW_RGB, axis=2)).any()


def test_seg_names_thoracic_and_partial_vertebrae(trust, tmp_path):
    anatomy = trust["anatomy"]
    labels = anatomy.labels.copy()
    # the study's top rows become a partly seen T11, the T11/T12 disc and T12
    labels[1:-1, 0:2, 8:28] = vertebra_label("T11") + SPIDER_PARTIAL_OFFSET
    labels[1:-1, 2:3, 9:27] = disc_label("T11-T12")
    labels[labels == vertebra_label("L1")] = 0
    labels[1:-1, 4:16, 8:28] = vertebra_label("L1")
    labels[1:-1, 3:4, 8:28] = vertebra_label("T12")
    thoracic = type(anatomy)(study_instance_uid=anatomy.study_instance_uid,
                             volumes=anatomy.volumes, labels=labels,
                             labels_role=anatomy.labels_role)
    out = write_results(trust["findings"], thoracic, trust["files"], tmp_path)
    seg = pydicom.dcmread(out["seg_sag_t2"])
    segments = {s.SegmentLabel: s for s in seg.SegmentSequence}
    assert list(segments)[:3] == ["T11 vertebra (partial)", "T12 vertebra", "L1 vertebra"]
    assert segments["T11/T12 disc"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "1537001"
    assert segments["T12 vertebra"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "23215003"
    present = [k for k in SEGMENT_KINDS if (labels == k.label_value).any()]
    assert [k.label for k in present] == list(segments)
