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
    assert "toy" in out and "ok" in out and "dice.vertebra=0.900" in out
    (toy_registry / "toy.bin").write_bytes(b"other weights")
    assert cli_main(["models", "list", "--dir", str(toy_registry)]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_default_registry_lists_segmentation():
    names = {c["name"]: c for c in registry.list_models()}
    assert names["segmentation"]["sha256_ok"] is True
    assert names["segmentation"]["task"] == "segmentation"
