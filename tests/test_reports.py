"""SEG, TID 1500 SR, key image and KOS of a small study, checked by independent readers:
dicom3tools (dciodvfy), dcmtk (dsrdump), dcmqi (tid1500reader, segimage2itkimage) and
highdicom."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sr_reading import label, outline, sr_groups
from test_reports_study import SERIES_UID, STUDY_UID, make_findings, make_study

from lumbar_common.vocabulary import GRADES, LEVELS, rsna_key
from models.reports import write_results
from models.reports.seg.codes import SEGMENT_KINDS
from models.reports.sr.viewers import OUTLINE_PREFIX, readable_tracking

BIN = Path(sys.executable).parent
NOT_ASSESSABLE = "left_subarticular_stenosis_l5_s1"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    anatomy, files, labels = make_study(root)
    findings = make_findings(anatomy.volumes["sag_t2"], not_assessable=(NOT_ASSESSABLE,))
    out = write_results(findings, anatomy, files, root / "out")
    return {
        "root": root,
        "anatomy": anatomy,
        "files": files,
        "labels": labels,
        "findings": findings,
        "out": out,
    }


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_writes_the_four_objects_into_the_study(study):
    out = study["out"]
    assert set(out) == {"sr", "seg_sag_t2", "keyimage", "ko"}
    source = pydicom.dcmread(next(iter(study["files"].values())))
    descriptions = {}
    for name, path in out.items():
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == STUDY_UID
        assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName
        assert ds.AccessionNumber == source.AccessionNumber
        assert ds.SeriesInstanceUID != SERIES_UID
        descriptions[name] = ds.SeriesDescription
    assert descriptions["sr"] == "AI lumbar stenosis SR"
    assert descriptions["seg_sag_t2"] == "AI lumbar segmentation"
    assert descriptions["keyimage"] == "AI lumbar key image"
    assert len({pydicom.dcmread(p).SeriesInstanceUID for p in out.values()}) == 4


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
@pytest.mark.parametrize("name", ["sr", "seg_sag_t2", "keyimage", "ko"])
def test_dciodvfy_reports_no_errors(study, name):
    result = _run("dciodvfy", "-new", str(study["out"][name]))
    errors = [
        line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")
    ]
    assert errors == []


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="dcmtk not installed")
def test_dsrdump_reads_the_sr(study):
    result = _run("dsrdump", str(study["out"]["sr"]))
    assert result.returncode == 0, result.stderr
    assert "Imaging Measurement Report" in result.stdout
    # 25 findings and one group of morphometry per level
    assert result.stdout.count('"Measurement Group"') == 30


def test_tid1500reader_reads_every_group(study, tmp_path):
    meta = tmp_path / "sr.json"
    result = _run(
        str(BIN / "tid1500reader"),
        "--inputDICOM",
        str(study["out"]["sr"]),
        "--outputMetadata",
        str(meta),
    )
    assert result.returncode == 0, result.stderr
    groups = json.loads(meta.read_text())["Measurements"]
    assert len(groups) == 30
    expected = {_tracking(f) for f in study["findings"]["findings"]}
    expected |= {f"{level} level measurements" for level in LEVELS}
    assert {readable_tracking(g["TrackingIdentifier"]) for g in groups} == expected
    # a group lists only its own evidence: the canal diameter for a canal grade, the disc
    # heights in the level's own group, each height named for what it measures
    orders = {
        readable_tracking(g["TrackingIdentifier"]): tuple(
            m["quantity"]["CodeMeaning"] for m in g["measurementItems"]
        )
        for g in groups
    }
    for text, order in orders.items():
        if text.endswith("level measurements"):
            assert order == ("Anterior disc height", "Posterior disc height")
        elif "not assessable" in text:
            assert "Probability" not in order
        elif " canal:" in text:
            assert order == ("Probability", "Diameter")
        else:
            assert order == ("Probability",), text


def test_segimage2itkimage_decodes_the_labels(study, tmp_path):
    result = _run(
        str(BIN / "segimage2itkimage"),
        "--inputDICOM",
        str(study["out"]["seg_sag_t2"]),
        "--outputDirectory",
        str(tmp_path),
        "-t",
        "nrrd",
    )
    assert result.returncode == 0, result.stderr
    labels = study["anatomy"].labels
    present = [k for k in SEGMENT_KINDS if (labels == k.label_value).any()]
    assert len(present) == 12
    for number, kind in enumerate(present, start=1):
        decoded = _read_nrrd(tmp_path / f"{number}.nrrd")
        np.testing.assert_array_equal(decoded != 0, labels == kind.label_value, err_msg=kind.label)


def _read_nrrd(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    header, _, data = raw.partition(b"\n\n")
    fields = dict(line.split(": ", 1) for line in header.decode().splitlines()[1:] if ": " in line)
    dtype = {"short": "<i2", "unsigned char": "u1"}[fields["type"]]
    assert fields["encoding"] == "gzip"
    sizes = [int(v) for v in fields["sizes"].split()]
    return np.frombuffer(gzip.decompress(data), dtype=dtype).reshape(sizes[::-1])


@pytest.mark.parametrize("labelmap", [False, True])
def test_seg_mask_equals_labels_voxel_for_voxel(study, tmp_path, labelmap):
    out = study["out"]["seg_sag_t2"]
    if labelmap:
        out = write_results(
            study["findings"], study["anatomy"], study["files"], tmp_path, labelmap=True
        )["seg_sag_t2"]
    seg = hd.seg.segread(out)
    assert seg.SegmentationType == ("LABELMAP" if labelmap else "BINARY")
    volume = study["anatomy"].volumes["sag_t2"]
    numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    labels = study["anatomy"].labels
    present = [k for k in SEGMENT_KINDS if (labels == k.label_value).any()]
    assert len(present) == 12 and {k.label for k in present} <= set(numbers)
    for kind in present:
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(volume.sop_instance_uids),
            segment_numbers=[numbers[kind.label]],
        )[..., 0]
        np.testing.assert_array_equal(mask != 0, labels == kind.label_value, err_msg=kind.label)
    assert int(seg.NumberOfFrames) == (labels.shape[0] if labelmap else 12 * labels.shape[0])
    if labelmap:  # dcmqi decodes a LABELMAP SEG into one image of segment numbers
        result = _run(
            str(BIN / "segimage2itkimage"),
            "--inputDICOM",
            str(out),
            "--outputDirectory",
            str(tmp_path),
            "-t",
            "nrrd",
        )
        assert result.returncode == 0, result.stderr
        decoded = _read_nrrd(tmp_path / "1.nrrd")
        for kind in present:
            np.testing.assert_array_equal(
                decoded == numbers[kind.label], labels == kind.label_value
            )


def test_seg_segments_are_coded_and_coloured(study):
    seg = pydicom.dcmread(study["out"]["seg_sag_t2"])
    disc = next(s for s in seg.SegmentSequence if s.SegmentLabel == "L4/L5 disc")
    assert disc.SegmentedPropertyTypeCodeSequence[0].CodeValue == "84020006"
    assert disc.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert len(disc.RecommendedDisplayCIELabValue) == 3
    algorithm = disc.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "lumbar-seg-unet" and algorithm.AlgorithmVersion == "1.0"
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"


def test_sr_grades_equal_the_findings(study):
    sr = hd.sr.srread(study["out"]["sr"])
    groups = _drawn(sr.content)
    assert len(groups) == 25  # every finding drawn: its outline is in its first NUM
    by_text = {readable_tracking(str(g.tracking_identifier)): g for g in groups}
    for finding in study["findings"]["findings"]:
        group = by_text[_tracking(finding)]
        site = group.finding_sites[0]
        assert (
            site.value.meaning
            == f"Level of {finding['level'].replace('-', '/')} intervertebral disc"
        )
        laterality = site.laterality.meaning.lower() if site.laterality else None
        assert laterality == finding["side"]
        severity = group.get_qualitative_evaluations()[0].value.meaning
        nums = {m.name.meaning: m.value for m in group.get_measurements()}
        if finding["assessable"]:
            assert severity == {"Normal/Mild": "Normal or mild"}.get(
                finding["grade"], finding["grade"]
            )
            index = GRADES.index(finding["grade"])
            assert nums["Probability"] == pytest.approx(finding["probabilities"][index])
        else:
            assert severity == "Undetermined" and "Probability" not in nums
        # disc heights are not the evidence of any grade
        assert not {"Anterior disc height", "Posterior disc height"} & set(nums)
        if finding["condition"] == "spinal_canal_stenosis":
            assert nums["Diameter"] == pytest.approx(12.0 - LEVELS.index(finding["level"]))
        else:
            assert "Diameter" not in nums


def test_sr_labels_name_level_side_finding_and_grade(study):
    """OHIF labels a measurement with the group's Comment: level, side, finding, grade."""
    groups = sr_groups(pydicom.dcmread(study["out"]["sr"]))
    for finding in study["findings"]["findings"]:
        side = f"{finding['side']} " if finding["side"] else ""
        short = _tracking(finding).split(":")[0].split()[-1]
        grade = finding["grade"] if finding["assessable"] else "not assessable"
        assert label(groups[_tracking(finding)]) == f"{finding['level']} {side}{short}: {grade}"
    assert label(groups["L4-L5 level measurements"]) == "L4-L5 level measurements"


def test_sr_groups_reference_disc_segment_and_draw_on_the_slice(study):
    sr = pydicom.dcmread(study["out"]["sr"])
    seg = pydicom.dcmread(study["out"]["seg_sag_t2"])
    disc_numbers = {s.SegmentLabel: s.SegmentNumber for s in seg.SegmentSequence}
    mid_sop = study["anatomy"].volumes["sag_t2"].sop_instance_uids[3]
    for text, items in sr_groups(sr).items():
        if text.endswith("level measurements"):
            continue  # a level's morphometry: its NUMs carry their own lines
        by_name = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in items}
        region = outline(items)
        if any(i.ValueType == "NUM" for i in items):
            # in the first NUM, not beside the NUMs where no viewer looks
            assert "Image Region" not in by_name
            assert region.RelationshipType == "INFERRED FROM"
        assert region.ConceptNameCodeSequence[0].CodeMeaning == "Image Region"
        assert region.GraphicType == "POLYLINE" and len(region.GraphicData) == 10
        assert (
            region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == mid_sop
        )
        level = by_name["Finding Site"].ConceptCodeSequence[0].CodeMeaning.split()[2]
        if "not assessable" in text:
            assert "Reason not assessable" in by_name
            continue
        images = [i for i in by_name["Probability"].ContentSequence if i.ValueType == "IMAGE"]
        source = images[0].ReferencedSOPSequence[0]
        assert source.ReferencedSOPInstanceUID == seg.SOPInstanceUID
        assert source.ReferencedSegmentNumber == disc_numbers[f"{level} disc"]


def test_sr_names_the_algorithm_and_private_scheme(study):
    sr = pydicom.dcmread(study["out"]["sr"])
    schemes = {i.CodingSchemeDesignator for i in sr.CodingSchemeIdentificationSequence}
    assert "99LUMBAR" in schemes
    ours = [e for e in sr.ContributingEquipmentSequence if e.Manufacturer == "lumbar-node"]
    assert {e.ManufacturerModelName for e in ours} == {"lumbar-seg-unet", "lumbar-grader"}
    assert all(e.PurposeOfReferenceCodeSequence[0].CodeValue == "109102" for e in ours)
    assert all(e.DeviceUID.startswith("2.25.") for e in ours)
    # one finding is not assessable, so the report is partial; nobody has verified it
    assert sr.CompletionFlag == "PARTIAL" and sr.VerificationFlag == "UNVERIFIED"


def test_key_image_burns_in_grades_and_notice(study):
    key = pydicom.dcmread(study["out"]["keyimage"])
    assert key.BurnedInAnnotation == "YES" and key.PhotometricInterpretation == "RGB"
    assert key.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    pixels = key.pixel_array
    assert pixels.shape[0] >= 512 and pixels.shape[2] == 3
    banner = pixels[:44].reshape(-1, 3)
    assert (np.all(banner == (150, 0, 0), axis=1)).mean() > 0.5  # the notice banner
    assert (np.all(pixels == (200, 30, 30), axis=2)).any()  # a "Severe" cell of the table
    assert key.SourceImageSequence[0].ReferencedSOPInstanceUID in study["files"]
    kos = pydicom.dcmread(study["out"]["ko"])
    assert kos.Modality == "KO"
    refs = kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert refs.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == key.SOPInstanceUID


def test_uids_are_deterministic_and_follow_the_model_version(study, tmp_path):
    again = write_results(study["findings"], study["anatomy"], study["files"], tmp_path / "again")
    # a new segmentation model that also grades the finding the old one could not
    upgraded = make_findings(study["anatomy"].volumes["sag_t2"], versions={"seg": "1.1"})
    other = write_results(upgraded, study["anatomy"], study["files"], tmp_path / "other")
    assert pydicom.dcmread(other["sr"]).CompletionFlag == "COMPLETE"
    for name, path in study["out"].items():
        first, second, third = (pydicom.dcmread(p) for p in (path, again[name], other[name]))
        assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (
            second.SOPInstanceUID,
            second.SeriesInstanceUID,
        )
        assert first.SOPInstanceUID != third.SOPInstanceUID
        assert first.SeriesInstanceUID != third.SeriesInstanceUID


def test_bad_input_is_refused_with_the_bad_value(study, tmp_path):
    anatomy, files, findings = study["anatomy"], study["files"], study["findings"]
    wrong_grade = json.loads(json.dumps(findings))
    wrong_grade["findings"][3]["grade"] = "Very severe"
    with pytest.raises(ValueError, match="Very severe"):
        write_results(wrong_grade, anatomy, files, tmp_path)
    missing = json.loads(json.dumps(findings))
    dropped = missing["findings"].pop(7)
    with pytest.raises(ValueError, match="lack 1 of the 25"):
        write_results(missing, anatomy, files, tmp_path)
    assert rsna_key(dropped["condition"], dropped["side"], dropped["level"])
    rejected = dict(findings, status="rejected")
    with pytest.raises(ValueError, match="rejected"):
        write_results(rejected, anatomy, files, tmp_path)
    bad_labels = anatomy.labels.copy()
    bad_labels[0, 0, 0] = 999
    broken = type(anatomy)(study_instance_uid=STUDY_UID, volumes=anatomy.volumes, labels=bad_labels)
    with pytest.raises(ValueError, match="999"):
        write_results(findings, broken, files, tmp_path)
    cropped = type(anatomy)(
        study_instance_uid=STUDY_UID, volumes=anatomy.volumes, labels=anatomy.labels[:, :10]
    )
    with pytest.raises(ValueError, match="do not match"):
        write_results(findings, cropped, files, tmp_path)
    bad_value = json.loads(json.dumps(findings))
    bad_value["levels"][0]["measurements"][0]["value"] = "twelve"
    with pytest.raises(ValueError, match="twelve"):
        write_results(bad_value, anatomy, files, tmp_path)
    bad_slice = json.loads(json.dumps(findings))
    bad_slice["findings"][2]["roi"]["slice"] = 99
    with pytest.raises(ValueError, match="slice 99"):
        write_results(bad_slice, anatomy, files, tmp_path)
    with pytest.raises(ValueError, match="not-a-study"):
        write_results(dict(findings, study_instance_uid="not-a-study"), anatomy, files, tmp_path)
    incomplete = dict(files)
    missing_uid = anatomy.volumes["sag_t2"].sop_instance_uids[0]
    del incomplete[missing_uid]
    with pytest.raises(ValueError, match=missing_uid):
        write_results(findings, anatomy, incomplete, tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial results left behind


def _tracking(finding: dict) -> str:
    side = f"{finding['side']} " if finding["side"] else ""
    short = {
        "spinal_canal_stenosis": "canal",
        "neural_foraminal_narrowing": "foramen",
        "subarticular_stenosis": "subarticular",
    }[finding["condition"]]
    grade = finding["grade"].lower() if finding["assessable"] else "not assessable"
    return f"{finding['level']} {side}{short}: {grade}"


def test_a_complete_group_leads_when_the_first_finding_is_not_assessable(study, tmp_path):
    findings = make_findings(
        study["anatomy"].volumes["sag_t2"], not_assessable=("spinal_canal_stenosis_l1_l2",)
    )
    out = write_results(findings, study["anatomy"], study["files"], tmp_path)
    groups = hd.sr.srread(out["sr"]).content.get_image_measurement_groups()
    assert readable_tracking(str(groups[0].tracking_identifier)) == "L2-L3 canal: moderate"
    assert readable_tracking(str(groups[1].tracking_identifier)) == "L1-L2 canal: not assessable"
    assert len(groups[0].get_measurements()) == 2 and len(groups[1].get_measurements()) == 1


def test_findings_as_the_grader_leaves_them(study, tmp_path):
    """Ungraded findings carry no grader, version or ROI; some ROIs have no corners."""
    findings = json.loads(json.dumps(study["findings"]))
    ungraded, cornerless = findings["findings"][0], findings["findings"][1]
    ungraded.update(
        assessable=False,
        grade=None,
        probabilities=None,
        grader=None,
        model_version=None,
        roi=None,
        reason="level L1-L2 was not found",
    )
    cornerless["roi"] = dict(cornerless["roi"], corners_lps=None)
    out = write_results(findings, study["anatomy"], study["files"], tmp_path)
    content = hd.sr.srread(out["sr"]).content
    drawn = _drawn(content)
    volumetric = content.get_volumetric_roi_measurement_groups()
    assert len(drawn) == 23 and len(volumetric) == 2
    by_text = {str(g.tracking_identifier): g for g in volumetric}
    disc = by_text["L2-L3 canal: moderate"].reference_type  # the L2/L3 disc segment
    assert disc.meaning == "Referenced Segment"
    assert "L1-L2 canal: not assessable" in by_text
    if shutil.which("dciodvfy"):
        result = _run("dciodvfy", "-new", str(out["sr"]))
        assert not [x for x in result.stderr.splitlines() if x.startswith("Error")]


def test_an_outline_without_any_num_is_the_groups_region(study, tmp_path):
    """A finding with an ROI but no number at all keeps its outline as a TID 1410 region,
    which viewers read when a group has no NUM."""
    findings = json.loads(json.dumps(study["findings"]))
    target = next(f for f in findings["findings"] if f["condition"] != "spinal_canal_stenosis")
    target.update(assessable=False, grade=None, probabilities=None, reason="image too noisy",
                  measurements=[], explanation=None)
    out = write_results(findings, study["anatomy"], study["files"], tmp_path)
    planar = hd.sr.srread(out["sr"]).content.get_planar_roi_measurement_groups()
    by_text = {str(g.tracking_identifier): g for g in planar}
    assert set(by_text) == {_tracking(target), _tracking(_finding(study, NOT_ASSESSABLE))}
    assert not by_text[_tracking(target)].get_measurements()
    assert by_text[_tracking(target)].roi is not None
    if shutil.which("dciodvfy"):
        result = _run("dciodvfy", "-new", str(out["sr"]))
        assert not [x for x in result.stderr.splitlines() if x.startswith("Error")]


def test_without_labels_there_is_no_seg_and_no_segment_reference(study, tmp_path):
    anatomy = study["anatomy"]
    bare = type(anatomy)(study_instance_uid=STUDY_UID, volumes=anatomy.volumes)
    out = write_results(study["findings"], bare, study["files"], tmp_path)
    assert set(out) == {"sr", "keyimage", "ko"}
    sr = pydicom.dcmread(out["sr"])
    assert "1.2.840.10008.5.1.4.1.1.66.4" not in str(sr)  # Segmentation Storage
    assert len(_drawn(hd.sr.srread(out["sr"]).content)) == 25


def _finding(study: dict, key: str) -> dict:
    return next(f for f in study["findings"]["findings"]
                if rsna_key(f["condition"], f["side"], f["level"]) == key)


def _drawn(content: hd.sr.MeasurementReport) -> list:
    """Finding groups a viewer draws: the outline in the first NUM (tracking identifier with
    the viewer's tool prefix), or the group's own region when it has no NUM (TID 1410)."""
    nums = [
        g
        for g in content.get_image_measurement_groups()
        if str(g.tracking_identifier).startswith(OUTLINE_PREFIX)
        and " disc:" not in str(g.tracking_identifier)
    ]
    return nums + list(content.get_planar_roi_measurement_groups())
