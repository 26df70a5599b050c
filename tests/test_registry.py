"""Model registry: cards, sha256 verification, tamper refusal, `lumbar-node models list`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models import registry
from workers.cli import main as cli_main


def _card(name: str = "toy") -> dict:
    return {
        "name": name, "version": "0.1.0", "task": "segmentation",
        "architecture": {"class": "none"}, "weights": f"{name}.bin", "sha256": "",
        "training_data": {"real": 0}, "split": {"test": []},
        "metrics": {"dice": {"vertebra": 0.9}}, "command": "true",
        "created": "2026-01-01T00:00:00Z",
    }


@pytest.fixture
def toy_registry(tmp_path: Path) -> Path:
    (tmp_path / "toy.bin").write_bytes(bytes(range(256)) * 64)
    registry.write_card(_card(), tmp_path)
    return tmp_path


def test_verify_accepts_untouched_weights(toy_registry: Path):
    path = registry.verify("toy", root=toy_registry)
    assert path == toy_registry / "toy.bin"
    assert registry.load_card("toy", toy_registry)["sha256"] == registry.sha256_file(path)


def test_verify_refuses_flipped_byte(toy_registry: Path):
    weights = toy_registry / "toy.bin"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(registry.WeightsMismatchError, match="refusing"):
        registry.verify("toy", root=toy_registry)
    assert registry.list_models(toy_registry)[0]["sha256_ok"] is False


def test_registered_segmentation_weights_refused_when_tampered(tmp_path: Path):
    card = registry.load_card("segmentation")
    for name in ("segmentation.json", card["weights"]):
        shutil.copy(registry.DEFAULT_WEIGHTS_DIR / name, tmp_path / name)
    assert registry.verify("segmentation", root=tmp_path).is_file()
    weights = tmp_path / card["weights"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(registry.WeightsMismatchError):
        registry.verify("segmentation", root=tmp_path)


def test_card_missing_fields_is_a_clear_error(tmp_path: Path):
    card = _card()
    del card["split"]
    card["sha256"] = "0" * 64
    (tmp_path / "toy.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="split"):
        registry.load_card("toy", tmp_path)


def test_unknown_model_names_known_ones(toy_registry: Path):
    with pytest.raises(KeyError, match="toy"):
        registry.load_card("nope", toy_registry)


def test_models_list_cli(toy_registry: Path, capsys: pytest.CaptureFixture[str]):
    assert cli_main(["models", "list", "--dir", str(toy_registry)]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "ok" in out and "dice: vertebra=0.900" in out
    (toy_registry / "toy.bin").write_bytes(b"other weights")
    assert cli_main(["models", "list", "--dir", str(toy_registry)]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_models_list_is_a_wrapped_table_test_figures_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    card = _card("wide")
    card.update(training_data_kind="synthetic", validated_on_real=[], task="grading " * 20)
    card["metrics"] = {
        "validation": {f"val_figure_{i}": 0.5 for i in range(10)},
        "dice_real_val": {"disc": 0.86},
        "test": {f"held_out_figure_{i}": 0.25 for i in range(10)} | {"command": "python x"},
        "dice_real_test": {"disc": 0.88},
        "per_patient_test": {str(i): {"disc": 0.9} for i in range(30)},
    }
    (tmp_path / "wide.bin").write_bytes(b"weights")
    registry.write_card(card, tmp_path)
    assert cli_main(["models", "list", "--dir", str(tmp_path), "--width", "80"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "version", "training", "data", "sha256"]
    assert lines[1].split()[:4] == ["wide", "0.1.0", "synthetic", "ok"]
    assert max(map(len, lines)) <= 80
    text = "\n".join(lines)
    test_at, val_at = text.index("test (held out):"), text.index("validation (selection")
    assert test_at < val_at
    assert test_at < text.index("held_out_figure_9=0.250") < val_at
    assert test_at < text.index("dice_real_test: disc=0.880") < val_at
    assert text.index("dice_real_val: disc=0.860") > val_at
    assert "(+18 more in the card)" in text  # 30 patients, 12 shown
    assert "validated on real images: none" in text and "command" not in text


def test_metric_names_are_read_by_what_they_measure():
    kinds = {g: registry.metric_kind(g) for g in (
        "test", "dice_real_test", "dice_real_test_per_patient", "dice_synthetic_test",
        "validation", "validation_uncalibrated", "dice_real_val", "reference", "contest")}
    assert kinds == {"test": "test", "dice_real_test": "test",
                     "dice_real_test_per_patient": "test", "dice_synthetic_test": "test",
                     "validation": "validation", "validation_uncalibrated": "validation",
                     "dice_real_val": "validation", "reference": "other", "contest": "other"}
    assert registry.training_data_kind({"training_data": {"real": {}, "synthetic": {}}}) == (
        "real+synthetic (inferred)")
    assert registry.training_data_kind({"training_data_kind": "synthetic"}) == "synthetic"


def test_update_card_keeps_the_checksum_and_refuses_other_weights(toy_registry: Path):
    sha = registry.load_card("toy", toy_registry)["sha256"]
    registry.update_card("toy", ("metrics", "test"), {"dice": 0.5}, toy_registry)
    card = registry.load_card("toy", toy_registry)
    assert card["metrics"]["test"] == {"dice": 0.5} and card["sha256"] == sha
    (toy_registry / "toy.bin").write_bytes(b"other weights")
    with pytest.raises(registry.WeightsMismatchError):
        registry.update_card("toy", ("metrics", "test"), {"dice": 0.9}, toy_registry)
    assert registry.load_card("toy", toy_registry)["metrics"]["test"] == {"dice": 0.5}


def test_shipped_grader_card_is_honest():
    """Synthetic training stated, nothing validated on real images, validation and test
    figures apart, every test and out-of-distribution figure from a benchmark command."""
    card = registry.load_card("grader")
    assert registry.verify("grader").is_file()
    assert card["training_data_kind"] == "synthetic" and card["validated_on_real"] == []
    assert "benchmark_unseen_synthetic" not in card["metrics"]
    assert card["metrics"]["test"]["command"].startswith("python benchmarks/grading.py")
    assert card["metrics"]["validation"]["score"] <= card["metrics"][
        "validation_uncalibrated"]["score"] + 1e-9
    assert all(set(c) == {"temperature"} for c in card["calibration"].values())
    rates = card["ood"]["flag_rates"]
    assert rates["command"].startswith("python benchmarks/grader_ood.py")
    assert rates["synthetic_test"]["canal"]["rate"] < 0.05
    assert rates["real_spider_t2space"]["canal"]["rate"] > 0.5


def test_default_registry_lists_segmentation():
    names = {c["name"]: c for c in registry.list_models()}
    assert names["segmentation"]["sha256_ok"] is True
    assert names["segmentation"]["task"] == "segmentation"
