"""Result objects of a generated synthetic study (``models.synth``): the SEG holds exactly
its sagittal T2 labels and the SR exactly its truth grades."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from lumbar_common.vocabulary import CANAL, FORAMEN, GRADES, finding_keys, rsna_key
from models.reports import write_results
from models.reports.seg.codes import SEGMENT_KINDS
from models.study import StudyAnatomy
from models.volume import load_volume

synth = pytest.importorskip("models.synth.generate")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_reports")
    truth = synth.generate_study(root / "study", 11)
    series = truth["series"]["sag_t2"]
    files = [root / "study" / f for f in series["files"]]
    volume = load_volume(files, role="sag_t2")
    npz = np.load(root / "study" / series["label_file"])
    assert tuple(npz["sop_instance_uids"]) == volume.sop_instance_uids
    anatomy = StudyAnatomy(
        study_instance_uid=truth["study_instance_uid"],
        volumes={"sag_t2": volume},
        labels=npz["labels"],
    )
    findings = _findings_from_truth(truth, volume)
    source = {
        str(uid): root / "study" / f
        for uid, f in zip(series["sop_instance_uids"], series["files"], strict=True)
    }
    out = write_results(findings, anatomy, source, root / "out")
    return {"truth": truth, "anatomy": anatomy, "out": out, "findings": findings}


def _findings_from_truth(truth: dict, volume) -> dict:
    """findings.json as a perfect grader would write it for this study."""
    findings, levels = [], []
    for condition, side, level in finding_keys():
        record = truth["levels"][level]
        grade = record["grades"][rsna_key(condition, side, level).rsplit("_", 2)[0]]
        centre = np.asarray(
            record["disc_centre_lps"]
            if condition == CANAL
            else record[
                "foramen_centre_lps" if condition == FORAMEN else "subarticular_centre_lps"
            ][side]
        )
        slice_index = int(
            np.clip(np.rint(volume.lps_to_index(centre)[0]), 0, volume.array.shape[0] - 1)
        )
        on_slice = volume.index_to_lps(np.r_[slice_index, volume.lps_to_index(centre)[1:]])
        row, col = volume.affine[:3, 1] / 2, volume.affine[:3, 2] / 2
        corners = [
            on_slice + a * 10 * row + b * 10 * col for a, b in ((-1, -1), (-1, 1), (1, 1), (1, -1))
        ]
        probabilities = [0.05, 0.05, 0.05]
        probabilities[GRADES.index(grade)] = 0.9
        findings.append(
            {
                "level": level,
                "condition": condition,
                "side": side,
                "grade": grade,
                "probabilities": probabilities,
                "assessable": True,
                "reason": None,
                "grader": "learned",
                "model_version": "3.1",
                "roi": {
                    "series_instance_uid": volume.series_instance_uid,
                    "slice": slice_index,
                    "corners_lps": np.round(corners, 3).tolist(),
                },
            }
        )
    for level, record in truth["levels"].items():
        levels.append(
            {
                "level": level,
                "disc_centre_lps": record["disc_centre_lps"],
                "warnings": [],
                "measurements": [
                    {"name": "canal_ap_diameter", "value": record["canal_ap_mm"], "unit": "mm"},
                    {
                        "name": "disc_height_anterior",
                        "value": record["disc_height_anterior_mm"],
                        "unit": "mm",
                    },
                ],
            }
        )
    return {
        "schema": "lumbar-node/findings/1",
        "status": "partial",
        "reason": None,
        "study_instance_uid": truth["study_instance_uid"],
        "series": [],
        "models": {
            "segmentation": {"name": "lumbar-seg", "version": "0.9"},
            "grader_learned": {"name": "lumbar-grader", "version": "3.1"},
        },
        "levels": levels,
        "findings": findings,
        "rsna": {},
        "timings_s": {},
    }


def test_seg_holds_the_labels_of_every_reported_structure(synthetic):
    seg = hd.seg.segread(synthetic["out"]["seg_sag_t2"])
    labels = synthetic["anatomy"].labels
    numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    uids = list(synthetic["anatomy"].volumes["sag_t2"].sop_instance_uids)
    present = [k for k in SEGMENT_KINDS if (labels == k.label_value).any()]
    assert len(present) == len(numbers) == 12  # T11/T12 and their disc are not reported
    for kind in present:
        mask = seg.get_pixels_by_source_instance(uids, segment_numbers=[numbers[kind.label]])
        np.testing.assert_array_equal(mask[..., 0] != 0, labels == kind.label_value)


def test_sr_grades_are_the_truth_grades(synthetic):
    groups = hd.sr.srread(synthetic["out"]["sr"]).content.get_planar_roi_measurement_groups()
    graded = {
        str(g.tracking_identifier).split(": ")[0]: str(g.tracking_identifier).split(": ")[1]
        for g in groups
    }
    assert len(graded) == 25
    for condition, side, level in finding_keys():
        grade = synthetic["truth"]["rsna"][rsna_key(condition, side, level)]
        short = {
            "spinal_canal_stenosis": "canal",
            "neural_foraminal_narrowing": "foramen",
            "subarticular_stenosis": "subarticular",
        }[condition]
        assert graded[f"{level} {side + ' ' if side else ''}{short}"] == grade.lower()


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_every_object_passes_dciodvfy(synthetic):
    for path in synthetic["out"].values():
        result = subprocess.run(
            ["dciodvfy", "-new", str(Path(path))],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        errors = [x for x in result.stderr.splitlines() if x.startswith("Error")]
        assert errors == [], path
