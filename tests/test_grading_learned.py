"""The learned grader: training end to end, registry checks, its predictions and the
out-of-distribution gate that travels with every one of them."""

import json
import shutil
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from lumbar_common.vocabulary import CANAL, FORAMEN, GRADES
from models import registry
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
                     no_features=False, val_seed=None, rsna=None, recalibrate=False)
    assert train.run(args) == 0
    return out


@pytest.mark.slow
def test_training_writes_a_registered_card(trained):
    card = registry.load_card("grader", trained)
    assert registry.verify("grader", trained).name == "grader.pt"
    assert card["summary"].startswith("Trained on synthetic studies only")
    assert list(json.loads((trained / "grader.json").read_text()))[0] == "summary"
    assert card["split"]["train"] == [7, 8] and card["split"]["val"] == [10007, 10007]
    # temperatures only: a class-prior offset could change the network's grade
    assert set(card["calibration"]) == {"canal", "foramen", "subarticular", "lss"}
    assert all(set(c) == {"temperature"} for c in card["calibration"].values())
    assert 0 < card["metrics"]["validation"]["score"] < 10
    # figures are validation figures; test figures come only from the benchmark
    assert "test" not in card["metrics"]
    assert card["training_data_kind"] == "synthetic" and card["validated_on_real"] == []
    assert set(card["ood"]["groups"]) == {"canal", "foramen", "subarticular"}
    assert card["ood"]["threshold"] == 1.0
    import torch

    ckpt = torch.load(trained / "grader.pt", weights_only=True)
    assert set(ckpt["ood"]) == {"canal", "foramen", "subarticular"}


@pytest.mark.slow
def test_recalibration_keeps_weights_and_checks_the_studies(trained, study, tmp_path):
    import torch

    from models.grading import train

    folder = tmp_path / "weights"
    shutil.copytree(trained, folder)
    cache = tmp_path / "cache"
    cache.mkdir()
    for seed in (7, 8, 7 + train.VAL_SEED_OFFSET):
        (cache / f"study_{seed}").symlink_to(study)
    args = Namespace(out=folder, studies=2, val_studies=1, seed=7, epochs=1, batch=16,
                     lr=1e-3, copies=1, cache=cache, device="cpu", threads=1, jobs=1,
                     no_features=False, val_seed=None, rsna=None, recalibrate=True)
    assert train.run(args) == 0
    card = registry.load_card("grader", folder)
    before = registry.load_card("grader", trained)
    assert card["version"].startswith(before["version"] + "+cal")
    assert card["calibration_command"].endswith("--recalibrate")
    assert card["command"] == before["command"]
    old = torch.load(trained / "grader.pt", weights_only=True)["state_dict"]
    new = torch.load(registry.verify("grader", folder), weights_only=True)["state_dict"]
    assert all(torch.equal(old[k], new[k]) for k in old)
    # a card whose validation score the regenerated studies do not reproduce is refused
    card["metrics"]["validation_uncalibrated"]["score"] += 0.5
    (folder / "grader.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="not the same studies"):
        train.run(args)


@pytest.mark.slow
def test_predictions_carry_probabilities_and_the_gate(trained, study):
    grader = LearnedGrader.load("cpu", trained)
    anatomy, _ = load_synthetic(study)
    out = grader.predict(anatomy)
    assert sorted(out) == sorted(lv.level for lv in anatomy.levels)
    for level in out.values():
        assert len(level) == 5
        for (condition, _side), entry in level.items():
            p = entry["probabilities"]
            assert sum(p) == pytest.approx(1.0, abs=1e-3)
            assert set(entry["ood"]) == {"flagged", "score", "threshold", "reason"}
            assert entry["ood"]["threshold"] == 1.0
            assert (entry["ood"]["reason"] is None) != entry["ood"]["flagged"]
            if condition == FORAMEN:
                assert len(entry["lss_probabilities"]) == 4

    # without a sagittal T1 the learned grader does not grade foramina (it never saw them
    # without T1): a reason, no probabilities, nothing for the gate to judge
    no_t1, _ = load_synthetic(study, roles=("sag_t2", "ax_t2"))
    for level in grader.predict(no_t1).values():
        for (condition, _side), entry in level.items():
            if condition == FORAMEN:
                assert "sagittal T1" in entry["reason"] and entry["ood"] is None
                assert "probabilities" not in entry
            else:
                assert entry["ood"]["score"] >= 0


def test_shipped_gate_passes_synthetic_and_flags_noise(study):
    """The shipped grader on an unseen synthetic study, then on the same geometry filled
    with noise: the gate lets the first through and stops the second's canal crops."""
    from dataclasses import replace

    grader = LearnedGrader.load("cpu")
    anatomy, _ = load_synthetic(study)
    entries = [e for lv in grader.predict(anatomy).values() for e in lv.values()]
    assert sum(e["ood"]["flagged"] for e in entries) <= 2
    rng = np.random.default_rng(0)
    noise = replace(anatomy, volumes={
        k: replace(v, array=np.abs(rng.normal(0.3, 0.3, v.array.shape)).astype(np.float32)
                   * float(v.array.max()))
        for k, v in anatomy.volumes.items()}, axial_stacks=[])
    canal = [lv[(CANAL, None)] for lv in grader.predict(noise).values()]
    assert canal and all(e["ood"]["flagged"] and e["ood"]["score"] > 1.0 for e in canal)
    assert all("unlike its synthetic training data" in e["ood"]["reason"] for e in canal)


@pytest.mark.slow
def test_tampered_or_ungated_weights_are_refused(trained, tmp_path):
    import torch

    bad = tmp_path / "weights"
    shutil.copytree(trained, bad)
    with open(bad / "grader.pt", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(LearnedUnavailable, match="sha256"):
        LearnedGrader.load("cpu", bad)
    # weights without the gate's statistics never run ungated
    ungated = tmp_path / "ungated"
    shutil.copytree(trained, ungated)
    ckpt = torch.load(trained / "grader.pt", weights_only=True)
    del ckpt["ood"]
    torch.save(ckpt, ungated / "grader.pt")
    card = registry.load_card("grader", ungated)
    registry.write_card(card, ungated)
    with pytest.raises(LearnedUnavailable, match="out-of-distribution"):
        LearnedGrader.load("cpu", ungated)


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
                     no_features=False, val_seed=None, rsna=tmp_path / "rsna",
                     recalibrate=False)
    assert train.run(args) == 0
    card = registry.load_card("grader", out)
    assert card["split"] == {"train": ["100", "101"], "val": ["102"], "by": "study"}
    assert "RSNA" in card["summary"]
    assert card["training_data_kind"] == "real" and card["validated_on_real"] == []
