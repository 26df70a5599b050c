"""Series selection on header-only datasets shaped like real scanner output."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from lumbar_common.series_selection import (
    classify_series,
    load_rules,
    read_headers,
    select_study,
)

SAG = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
AX = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
COR = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]


def _tilted_axial(deg: float) -> list[float]:
    a = math.radians(deg)
    return [1.0, 0.0, 0.0, 0.0, math.cos(a), math.sin(a)]


def series(n=15, iop=SAG, tr=3500.0, te=100.0, ti=None, desc="", body="LSPINE",
           modality="MR", image_type="ORIGINAL\\PRIMARY\\M\\ND", seq="SE", uid=None):
    uid = uid or generate_uid()
    out = []
    for i in range(n):
        ds = Dataset()
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.Modality = modality
        ds.ImageType = image_type.split("\\")
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = [float(i * 4), 0.0, 0.0]
        ds.RepetitionTime = tr
        ds.EchoTime = te
        if ti is not None:
            ds.InversionTime = ti
        ds.ScanningSequence = seq
        ds.SequenceVariant = "SK"
        ds.SeriesDescription = desc
        if body:
            ds.BodyPartExamined = body
        out.append(ds)
    return out


def test_roles_from_geometry_and_timing_not_description():
    # descriptions deliberately say nothing (or mislead); timing decides
    assert classify_series(series(te=110, desc="series 3")).role == "sag_t2"
    assert classify_series(series(tr=600, te=12, desc="sag T2 (mislabelled)")).role == "sag_t1"
    stir = classify_series(series(tr=4000, te=40, ti=160, seq="IR"))
    assert stir.role == "sag_stir" and "STIR" in stir.reason
    ax = classify_series(series(iop=AX, te=95))
    assert ax.role == "ax_t2" and "axial" in ax.reason


def test_angled_axial_counts_coronal_does_not():
    assert classify_series(series(iop=_tilted_axial(30), te=90)).role == "ax_t2"
    tilted_too_far = classify_series(series(iop=_tilted_axial(60), te=90))
    assert tilted_too_far.role == "other"
    assert classify_series(series(iop=COR, te=90)).role == "other"


def test_axial_blocks_angled_along_the_lordosis_are_one_axial_series():
    """Per-disc blocks from -20° (L1-L2) to +32° (L5-S1): 52° apart, each of them axial."""
    blocks = [series(n=4, iop=_tilted_axial(deg), te=95) for deg in (-20, -8, 5, 18, 32)]
    uid = blocks[0][0].SeriesInstanceUID
    headers = [ds for block in blocks for ds in block]
    for ds in headers:
        ds.SeriesInstanceUID = uid
    d = classify_series(headers)
    assert d.role == "ax_t2" and "angled per disc" in d.reason, d.reason
    beyond = [series(n=4, iop=_tilted_axial(deg), te=95) for deg in (-20, 45)]
    for ds in (ds for block in beyond for ds in block):
        ds.SeriesInstanceUID = uid
    assert classify_series([ds for b in beyond for ds in b]).role == "other"


def test_description_only_breaks_ties():
    # TE 45 ms lies between the T1 and T2 thresholds: the description decides, and says so
    d = classify_series(series(te=45, tr=3000, desc="SAG T2 TSE"))
    assert d.role == "sag_t2" and "description" in d.reason
    undecided = classify_series(series(te=45, tr=3000, desc="sequence 4"))
    assert undecided.role == "other" and "neither" in undecided.reason


def test_localizers_rejected():
    assert "localizer" in classify_series(series(image_type="ORIGINAL\\PRIMARY\\LOCALIZER")).reason
    three_plane = series(n=3, iop=SAG) + series(n=3, iop=AX) + series(n=3, iop=COR)
    uid = three_plane[0].SeriesInstanceUID
    for ds in three_plane:
        ds.SeriesInstanceUID = uid
    d = classify_series(three_plane)
    assert d.role == "other" and "multi-plane" in d.reason
    scout = classify_series(series(n=3, tr=8.0, te=4.0))  # fast gradient-echo scout
    assert scout.role == "other" and "3 images" in scout.reason
    few_axial = classify_series(series(n=3, iop=AX))
    assert few_axial.role == "other" and "3 images" in few_axial.reason


def test_a_few_diagnostic_sagittal_slices_are_kept_for_disc_findings():
    one = classify_series(series(n=1))
    assert one.role == "sag_t2" and "disc findings only" in one.reason
    t1 = classify_series(series(n=2, tr=600.0, te=12.0))
    assert t1.role == "sag_t1" and "only 2 image(s)" in t1.reason
    # a full series still wins the role over a single key image
    full, key = series(n=15), series(n=1)
    chosen = select_study({full[0].SeriesInstanceUID: full, key[0].SeriesInstanceUID: key})
    assert chosen.chosen["sag_t2"] == full[0].SeriesInstanceUID


def test_non_mr_and_non_lumbar_rejected():
    assert "not MR" in classify_series(series(modality="CT")).reason
    brain = classify_series(series(iop=AX, body="BRAIN", desc="ax t2 brain"))
    assert brain.role == "other" and brain.lumbar is False
    cspine = classify_series(series(body="", desc="SAG T2 C-SPINE"))
    assert cspine.role == "other" and "c-spine" in cspine.reason.lower()


def test_select_study_complete_partial_rejected():
    t2, t1, ax = series(), series(tr=550, te=10), series(iop=AX, te=100)
    loc = series(n=3, image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    full = select_study({s[0].SeriesInstanceUID: s for s in (t2, t1, ax, loc)})
    assert full.complete and full.is_lumbar and full.rejected_reason is None
    assert full.chosen == {"sag_t2": t2[0].SeriesInstanceUID, "sag_t1": t1[0].SeriesInstanceUID,
                           "ax_t2": ax[0].SeriesInstanceUID}

    partial = select_study({t2[0].SeriesInstanceUID: t2})
    assert not partial.complete and partial.rejected_reason is None
    assert partial.sagittal_role == "sag_t2"

    stir = series(tr=4000, te=40, ti=150, seq="IR")
    with_stir = select_study({s[0].SeriesInstanceUID: s for s in (stir, t1, ax)})
    assert with_stir.complete and with_stir.sagittal_role == "sag_stir"

    no_t2 = select_study({s[0].SeriesInstanceUID: s for s in (t1, ax)})
    assert no_t2.rejected_reason == "no usable sagittal T2 or STIR series"

    brain = [series(iop=AX, body="BRAIN"), series(body="HEAD", tr=500, te=10)]
    rejected = select_study({s[0].SeriesInstanceUID: s for s in brain})
    assert not rejected.is_lumbar and "not a lumbar" in rejected.rejected_reason


def test_larger_reacquisition_wins():
    aborted, full = series(n=7), series(n=15)
    sel = select_study({s[0].SeriesInstanceUID: s for s in (aborted, full)})
    assert sel.chosen["sag_t2"] == full[0].SeriesInstanceUID


def test_enhanced_multiframe_header():
    ds = Dataset()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = 20
    plane = Dataset()
    plane.ImageOrientationPatient = SAG
    timing = Dataset()
    timing.RepetitionTime = 3000.0
    echo = Dataset()
    echo.EffectiveEchoTime = 105.0
    shared = Dataset()
    shared.PlaneOrientationSequence = [plane]
    shared.MRTimingAndRelatedParametersSequence = [timing]
    shared.MREchoSequence = [echo]
    ds.SharedFunctionalGroupsSequence = [shared]
    d = classify_series([ds])
    assert d.role == "sag_t2" and d.n_instances == 20


def test_rules_file_is_editable(tmp_path: Path, monkeypatch):
    text = Path(load_rules.__globals__["DEFAULT_RULES_PATH"]).read_text()
    strict = tmp_path / "rules.toml"
    strict.write_text(text.replace("t2_min_te_ms = 60.0", "t2_min_te_ms = 120.0"))
    d = classify_series(series(te=100, desc="x"), load_rules(strict))
    assert d.role == "other"
    monkeypatch.setenv("LUMBAR_NODE_SERIES_RULES", str(strict))
    assert classify_series(series(te=100, desc="x")).role == "other"
    with pytest.raises(ValueError, match="not found"):
        load_rules(tmp_path / "missing.toml")


def test_read_headers_groups_and_records_unreadable(tmp_path: Path):
    files = []
    for i, ds in enumerate(series(n=6)):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        path = tmp_path / f"IM{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    bad = tmp_path / "garbage.dcm"
    bad.write_bytes(b"not dicom at all" * 4)
    by_series, warnings = read_headers([*files, bad])
    assert [len(v) for v in by_series.values()] == [6]
    assert len(warnings) == 1 and "garbage.dcm" in warnings[0]
    assert np.isclose(float(pydicom.dcmread(files[0]).EchoTime), 100.0)


# --- on synthetic studies as a PACS sends them -------------------------------------------

SYNTH_CASES = {
    "complete": dict(seed=3, matrix=128),
    "sag_stir_only": dict(seed=5, variants=["missing_sag_t1", "missing_ax_t2", "stir"],
                          matrix=128),
    "messy": dict(seed=6, variants=["localizer", "duplicate_instances", "duplicate_position",
                                    "out_of_order", "corrupt"], matrix=128),
    "brain": dict(seed=4, variants=["non_lumbar"], matrix=128),
}


@pytest.mark.parametrize("case", sorted(SYNTH_CASES))
def test_synthetic_variants(synth_study, case):
    import json

    study = synth_study(**SYNTH_CASES[case])
    truth = json.loads((study / "truth.json").read_text())
    by_series, warnings = read_headers(sorted((study / "dicom").rglob("*.dcm")))
    assert len(warnings) == len(truth["corrupt_files"])
    sel = select_study(by_series)
    for key, rec in truth["series"].items():
        decision = sel.decision(rec["series_instance_uid"])
        assert decision.role == rec["role"], (key, decision.reason)
        assert decision.reason
    if case == "brain":
        assert not sel.is_lumbar and "not a lumbar" in sel.rejected_reason
        return
    assert sel.is_lumbar and sel.rejected_reason is None
    roles = {rec["role"] for rec in truth["series"].values()} - {"other"}
    assert set(sel.chosen) == roles
    assert sel.complete == {"sag_t1", "ax_t2"}.issubset(roles)
    if case == "messy":
        loc = sel.decision(truth["series"]["localizer"]["series_instance_uid"])
        assert "localizer" in loc.reason or "multi-plane" in loc.reason
