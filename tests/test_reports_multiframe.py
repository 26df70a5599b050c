"""Result objects of a series sent as one Enhanced (multi-frame) MR instance: references
name frames, and the SEG frames follow the source's frame order, not the slice order."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from sr_reading import outline, sr_groups
from test_reports_study import SERIES_UID, make_findings, make_study

from models.reports import write_results
from models.reports.seg.codes import SEGMENT_KINDS
from models.study import StudyAnatomy
from models.volume import load_volume

MULTIFRAME_UID = "1.2.826.0.1.3680043.8.498.3001"


@pytest.fixture(scope="module")
def multiframe(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiframe")
    classic, files, _ = make_study(root)
    legacy = [pydicom.dcmread(p) for p in files.values()]
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy,
        series_instance_uid=SERIES_UID,
        series_number=3,
        sop_instance_uid=MULTIFRAME_UID,
        instance_number=1,
    )
    path = root / "enhanced.dcm"
    enhanced.save_as(path)
    volume = load_volume([path], role="sag_t2")
    assert set(volume.sop_instance_uids) == {MULTIFRAME_UID}
    # the classic volume has the same geometry, so its labels fit slice for slice
    np.testing.assert_allclose(volume.affine, classic.volumes["sag_t2"].affine)
    anatomy = StudyAnatomy(
        study_instance_uid=classic.study_instance_uid,
        volumes={"sag_t2": volume},
        labels=classic.labels,
    )
    out = write_results(make_findings(volume), anatomy, {MULTIFRAME_UID: path}, root / "out")
    return {"anatomy": anatomy, "enhanced": enhanced, "out": out}


def _frame_of_slice(enhanced, volume, index: int) -> int:
    origin = volume.index_to_lps(np.array([index, 0.0, 0.0]))
    positions = [
        np.array(f.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        for f in enhanced.PerFrameFunctionalGroupsSequence
    ]
    return int(np.argmin([np.linalg.norm(p - origin) for p in positions])) + 1


def test_seg_frames_follow_the_source_frames(multiframe):
    anatomy, enhanced = multiframe["anatomy"], multiframe["enhanced"]
    volume = anatomy.volumes["sag_t2"]
    seg = hd.seg.segread(multiframe["out"]["seg_sag_t2"])
    numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    frames = [_frame_of_slice(enhanced, volume, i) for i in range(volume.array.shape[0])]
    assert frames != sorted(frames)  # slices run opposite to frames here: order matters
    present = [k for k in SEGMENT_KINDS if (anatomy.labels == k.label_value).any()]
    assert [k.label for k in present] == list(numbers)
    for kind in present:
        mask = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=MULTIFRAME_UID,
            source_frame_numbers=frames,
            segment_numbers=[numbers[kind.label]],
        )[..., 0]
        np.testing.assert_array_equal(mask != 0, anatomy.labels == kind.label_value)


def test_sr_and_key_image_reference_the_frame_of_the_slice(multiframe):
    anatomy, enhanced = multiframe["anatomy"], multiframe["enhanced"]
    mid_frame = _frame_of_slice(enhanced, anatomy.volumes["sag_t2"], 3)
    groups = sr_groups(pydicom.dcmread(multiframe["out"]["sr"]))
    outlines = [outline(items) for text, items in groups.items()
                if not text.endswith("level measurements")]
    assert len(outlines) >= 25 and all(o is not None for o in outlines)
    for region in outlines:
        source = region.ContentSequence[0].ReferencedSOPSequence[0]
        assert source.ReferencedSOPInstanceUID == MULTIFRAME_UID
        assert [int(f) for f in np.atleast_1d(source.ReferencedFrameNumber)] == [mid_frame]
    key = pydicom.dcmread(multiframe["out"]["keyimage"])
    key_slice = int(np.argmax((anatomy.labels == 100).sum(axis=(1, 2))))  # most canal
    key_frame = _frame_of_slice(enhanced, anatomy.volumes["sag_t2"], key_slice)
    assert int(key.SourceImageSequence[0].ReferencedFrameNumber) == key_frame


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_objects_pass_dciodvfy(multiframe):
    for name in ("seg_sag_t2", "sr", "keyimage", "ko"):
        result = subprocess.run(
            ["dciodvfy", "-new", str(multiframe["out"][name])],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert [x for x in result.stderr.splitlines() if x.startswith("Error")] == [], name
