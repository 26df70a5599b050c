"""Real SPIDER slices reach the pipeline as a PACS would send them, and what comes out holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.plausibility import RANGES
from models.realdata.spider import load_gradings, load_t2space, midsag_images, realdata_root
from models.realdata.wrap import SeriesSpec, write_sagittal_series
from models.volume import load_volume


def test_the_shared_real_data_is_beside_the_checkout():
    # no skip: without these files the real-data checks below would silently not run
    assert (realdata_root() / "spider-midsag" / "gradings.csv").is_file()


def test_wrapped_slices_keep_their_anatomy_and_spacing(tmp_path):
    data = load_t2space("50")
    files = write_sagittal_series(tmp_path, "50", data.images, data.pixel_mm, data.slice_mm,
                                  SeriesSpec("t2_spc_sag", 1500.0, 120.0))
    volume = load_volume(files, role="sag_t2")
    assert volume.array.shape == data.images.shape
    assert np.allclose(volume.spacing, [data.slice_mm, *data.pixel_mm])
    # rows still run head -> feet: the first row is the most superior
    top, bottom = volume.index_to_lps(np.array([[0, 0, 0], [0, volume.array.shape[1] - 1, 0]]))
    assert top[2] > bottom[2]
    # every slice is one of the source slices, untouched
    for k in range(len(volume.array)):
        assert min(np.abs(volume.array[k].astype(int) - im).sum() for im in data.images) == 0


def test_bad_series_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_sagittal_series(tmp_path, "x", np.zeros((4, 4)), (1.0, 1.0), 1.0,
                              SeriesSpec("t2", 3000.0, 100.0))
    with pytest.raises(ValueError, match="spacings"):
        write_sagittal_series(tmp_path, "x", np.zeros((1, 4, 4)), (0.0, 1.0), 1.0,
                              SeriesSpec("t2", 3000.0, 100.0))


def test_gradings_name_levels_from_the_sacrum():
    g = load_gradings()
    assert g[("1", "L5-S1")].pfirrmann == 3 and g[("1", "L5-S1")].narrowing
    assert sum(x.healthy for x in g.values()) > 100


def test_a_single_mid_sagittal_slice_gives_measurements_and_undetermined_stenosis(tmp_path):
    from models.pipeline import analyze_study

    img = next(m for m in midsag_images() if m.patient == "2" and m.sequence == "t2")
    pixels = np.asarray(Image.open(img.path).convert("L"))[None]
    files = write_sagittal_series(tmp_path / "dicom", "2", pixels, (img.row_mm, img.col_mm),
                                  img.slice_thickness_mm,
                                  SeriesSpec("t2_tse_sag", img.tr_ms, img.te_ms))
    doc = analyze_study(files, tmp_path / "out", device="cpu")
    assert doc["status"] == "partial"
    assert len(doc["findings"]) == 25
    assert all(not f["assessable"] and "only 1 slice" in f["reason"] and f["review"]["required"]
               for f in doc["findings"])
    assert [lv["level"] for lv in doc["levels"]] == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    for lv in doc["levels"]:
        for m in lv["measurements"]:
            lo, hi, _ = RANGES.get(m["name"], (-np.inf, np.inf, ""))
            assert lo <= m["value"] <= hi, (lv["level"], m)
    assert Path(tmp_path / "out" / "sr.dcm").is_file()
    # disc findings need only the mid-sagittal slice
    discs = doc["disc_findings"]
    assert [d["level"] for d in discs] == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    for d in discs:
        assert d["assessable"] and d["model_version"], d
        assert 1 <= d["pfirrmann"]["grade"] <= 5
        assert abs(sum(d["pfirrmann"]["probabilities"]) - 1) < 1e-3
        assert 0 <= d["narrowing"]["probability"] <= 1
    assert doc["models"]["disc_grader"]["name"] == "disc"
