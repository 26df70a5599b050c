"""The learned grader: training end to end, registry checks, and its findings."""

import json
import shutil
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from lumbar_common.vocabulary import FORAMEN, GRADES
from models import registry
from models.grading import grade_study
from models.grading.learned_grader import LearnedGrader, LearnedUnavailable
from models.grading.synthetic import load_synthetic


@pytest.fixture(scope="module")
def study(graded_study: Path) -> Path:
    return graded_study


@pytest.fixture(scope="module")
def trained(study, tmp_path_factory) -> Path:
    """A tiny model trained through the real command path on one cached study.

    The same study stands in for two training and one validation seed (cache entries are
    links), which is enough to exercise data, training, calibration and the card.
    """
    from models.grading import train

    root = tmp_path_factory.mktemp("train")
    cache = root / "cache"
    cache.mkdir()
    for seed in (7, 8, 7 + train.VAL_SEED_OFFSET):
        (cache / f"study_{seed}").symlink_to(study)
    out = root / "weights"
    args = Namespace(out=out, studies=2, val_studies=1, seed=7, epochs=1, batch=16, lr=1e-3,
                     copies=1, cache=cache, device="cpu", threads=1, jobs=1,
                     no_features=False, val_seed=None, rsna=None)
    assert train.run(args) == 0
    return out


@pytest.mark.slow
def test_training_writes_a_registered_card(trained):
    card = registry.load_card("grader", trained)
    assert registry.verify("grader", trained).name == "grader.pt"
    assert card["summary"].startswith("Trained on synthetic studies only")
    assert list(json.loads((trained / "grader.json").read_text()))[0] == "summary"
    assert card["split"]["train"] == [7, 8] and card["split"]["val"] == [10007, 10007]
    assert set(card["calibration"]) == {"canal", "foramen", "subarticular", "lss"}
    assert 0 < card["metrics"]["validation"]["score"] < 10


@pytest.mark.slow
def test_learned_findings_and_fallbacks(trained, study, monkeypatch):
    monkeypatch.setenv("LUMBAR_NODE_WEIGHTS_DIR", str(trained))
    anatomy, _ = load_synthetic(study)
    findings, cards = grade_study(anatomy, "cpu")
    assert cards["grader_learned"]["sha256"] == registry.load_card("grader", trained)["sha256"]
    assert all(f["grader"] == "learned" and f["assessable"] for f in findings)
    for f in findings:
        assert f["grade"] == GRADES[int(np.argmax(f["probabilities"]))]
        if f["condition"] == FORAMEN:
            assert len(f["lss_probabilities"]) == 4
            assert sum(f["lss_probabilities"]) == pytest.approx(1.0, abs=1e-3)
        assert f["explanation"]["grader"] == "measurement"

    # without a sagittal T1 the learned grader does not grade foramina (it never saw them
    # without T1); the measurement grader cannot either, so they are not assessable
    no_t1, _ = load_synthetic(study, roles=("sag_t2", "ax_t2"))
    findings, _ = grade_study(no_t1, "cpu")
    for f in findings:
        if f["condition"] == FORAMEN:
            assert not f["assessable"] and "sagittal T1" in f["reason"]
        else:
            assert f["grader"] == "learned"


@pytest.mark.slow
def test_tampered_weights_are_refused(trained, study, tmp_path, monkeypatch):
    bad = tmp_path / "weights"
    shutil.copytree(trained, bad)
    with open(bad / "grader.pt", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(LearnedUnavailable, match="sha256"):
        LearnedGrader.load("cpu", bad)
    monkeypatch.setenv("LUMBAR_NODE_WEIGHTS_DIR", str(bad))
    anatomy, _ = load_synthetic(study)
    findings, cards = grade_study(anatomy, "cpu")
    assert "grader_learned" not in cards
    assert all(f["grader"] == "measurement" for f in findings)
    assert all("sha256" in f["reason"] for f in findings)


def _rsna_fixture(study: Path, root: Path, study_ids: list[str]) -> None:
    """The synthetic study rewritten in the RSNA 2024 layout, canal coordinates included."""
    import pydicom

    from lumbar_common.vocabulary import CANAL, LEVELS, finding_keys, rsna_key

    anatomy, truth = load_synthetic(study)
    sag = anatomy.volumes["sag_t2"]
    series = {"sag_t2": ("11", "Sagittal T2/STIR"), "sag_t1": ("12", "Sagittal T1"),
              "ax_t2": ("13", "Axial T2")}
    cols = [rsna_key(c, s, lv) for c, s, lv in finding_keys()]
    csv_rows, desc_rows, coord_rows = [], [], []
    for sid in study_ids:
        instance_of: dict[str, int] = {}
        for key, (series_id, desc) in series.items():
            folder = root / "train_images" / sid / series_id
            folder.mkdir(parents=True)
            for f in truth["series"][key]["files"]:
                ds = pydicom.dcmread(study / f)
                instance_of[str(ds.SOPInstanceUID)] = int(ds.InstanceNumber)
                shutil.copy(study / f, folder / f"{int(ds.InstanceNumber)}.dcm")
            desc_rows.append(f"{sid},{series_id},{desc}")
        csv_rows.append(sid + "," + ",".join(truth["rsna"][k] for k in cols))
        for level in anatomy.levels:
            s, r, c = sag.lps_to_index(level.canal_centre_lps)
            inst = instance_of[sag.sop_instance_uids[int(round(s))]]
            label = "L" + level.level.replace("-", "/")[1:]
            assert rsna_key(CANAL, None, level.level) and level.level in LEVELS
            coord_rows.append(f"{sid},11,{inst},Spinal Canal Stenosis,{label},{c:.1f},{r:.1f}")
    (root / "train.csv").write_text("study_id," + ",".join(cols) + "\n"
                                    + "\n".join(csv_rows) + "\n")
    (root / "train_series_descriptions.csv").write_text(
        "study_id,series_id,series_description\n" + "\n".join(desc_rows) + "\n")
    (root / "train_label_coordinates.csv").write_text(
        "study_id,series_id,instance_number,condition,level,x,y\n" + "\n".join(coord_rows) + "\n")


@pytest.mark.slow
def test_rsna_folder_gives_levels_and_trains(study, tmp_path):
    from models.grading import train
    from models.grading.readers.rsna import read_rsna
    from models.grading.readers.rsna_anatomy import rsna_anatomy

    _rsna_fixture(study, tmp_path / "rsna", ["100", "101", "102"])
    studies = read_rsna(tmp_path / "rsna")
    anatomy, targets = rsna_anatomy(studies[0])
    synthetic, truth = load_synthetic(study)
    for got, want in zip(anatomy.levels, synthetic.levels, strict=True):
        # the coordinate sits on the nearest sagittal slice: within half a slice gap
        assert np.linalg.norm(got.canal_centre_lps - want.canal_centre_lps) < 2.5
        assert float(np.dot(got.cranial_lps, want.cranial_lps)) > 0.95
        assert GRADES[targets[got.level][0]] == truth["levels"][got.level]["grades"][
            "spinal_canal_stenosis"]
    out = tmp_path / "weights"
    args = Namespace(out=out, studies=0, val_studies=1, seed=0, epochs=1, batch=16, lr=1e-3,
                     copies=1, cache=tmp_path / "cache", device="cpu", threads=1, jobs=1,
                     no_features=False, val_seed=None, rsna=tmp_path / "rsna")
    assert train.run(args) == 0
    card = registry.load_card("grader", out)
    assert card["split"] == {"train": ["100", "101"], "val": ["102"], "by": "study"}
    assert "RSNA" in card["summary"]
