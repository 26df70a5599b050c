"""Result objects of a generated synthetic study (``models.synth``): the SEG holds exactly
its sagittal T2 labels and the SR exactly its truth grades."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from test_reports_study import findings_from_truth

from lumbar_common.vocabulary import finding_keys, rsna_key
from models.reports import write_results
from models.reports.seg.codes import SEGMENT_KINDS
from models.reports.sr.viewers import readable_tracking
from models.study import StudyAnatomy
from models.volume import load_volume


@pytest.fixture(scope="module")
def synthetic(synth_study, tmp_path_factory):
    # the same study as tests/test_synth_geometry.py, so a session generates it once
    study = synth_study(seed=3, axial="stack", matrix=160)
    truth = json.loads((study / "truth.json").read_text())
    series = truth["series"]["sag_t2"]
    files = [study / f for f in series["files"]]
    volume = load_volume(files, role="sag_t2")
    npz = np.load(study / series["label_file"])
    assert tuple(npz["sop_instance_uids"]) == volume.sop_instance_uids
    anatomy = StudyAnatomy(
        study_instance_uid=truth["study_instance_uid"],
        volumes={"sag_t2": volume},
        labels=npz["labels"],
    )
    findings = findings_from_truth(truth, volume)
    source = {
        str(uid): study / f
        for uid, f in zip(series["sop_instance_uids"], series["files"], strict=True)
    }
    out = write_results(findings, anatomy, source, tmp_path_factory.mktemp("reports_out"))
    return {"truth": truth, "anatomy": anatomy, "out": out, "findings": findings}


def test_seg_holds_the_labels_of_every_reported_structure(synthetic):
    seg = hd.seg.segread(synthetic["out"]["seg_sag_t2"])
    labels = synthetic["anatomy"].labels
    numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    uids = list(synthetic["anatomy"].volumes["sag_t2"].sop_instance_uids)
    present = [k for k in SEGMENT_KINDS if (labels == k.label_value).any()]
    # every structure in view is a segment, the thoracic ones above L1 included
    assert [k.label for k in present] == list(numbers)
    assert set(np.unique(labels).tolist()) - {0} == {k.label_value for k in present}
    assert {"T12 vertebra (partial)", "T12/L1 disc", "L1 vertebra", "Sacrum"} <= set(numbers)
    for kind in present:
        mask = seg.get_pixels_by_source_instance(uids, segment_numbers=[numbers[kind.label]])
        np.testing.assert_array_equal(mask[..., 0] != 0, labels == kind.label_value)


def test_sr_grades_are_the_truth_grades(synthetic):
    groups = hd.sr.srread(synthetic["out"]["sr"]).content.get_image_measurement_groups()
    texts = [readable_tracking(str(g.tracking_identifier)) for g in groups]
    graded = {
        text.split(": ")[0]: text.split(": ")[1]
        for text in texts
        if not text.endswith("level measurements") and " disc: " not in text
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
