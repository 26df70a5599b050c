"""Model registry: model cards beside their weights, and the sha256 check that guards them.

The node runs only weights whose sha256 equals the one written in their card when they were
trained, so a truncated copy, a silently retrained file or a tampered file is refused instead
of producing plausible-looking wrong results.

Card format
-----------
One JSON file per model, ``models/weights/<name>.json``, beside its weights file::

    {
      "name": "segmentation",                 # registry key, equal to the file stem
      "version": "1.0.0",                      # bump whenever the weights change
      "task": "segmentation",                  # what the model does (segmentation, grading, ...)
      "training_data_kind": "real+synthetic",  # "synthetic" | "real" | "real+synthetic"
      "validated_on_real": [],                 # conditions shown valid on real images
      "architecture": {...},                   # enough to rebuild the network (class + args)
      "weights": "segmentation.pt",            # file name, relative to the card's folder
      "sha256": "<64 hex>",                    # of the weights file
      "training_data": {...},                  # datasets, patients/studies, slice counts
      "split": {"train": [...], "val": [...], "test": [...]},   # patient/study IDs
      "metrics": {"test": {...}, "validation": {...}},   # see below
      "command": "lumbar-node train ...",      # the exact command that produced the weights
      "created": "2026-01-01T00:00:00Z",       # UTC, ISO 8601
      ...                                      # anything else (device, training time, notes)
    }

``metrics`` groups figures by what the data was used for: ``test`` (held out, touched once),
``validation`` (chose the epoch or fitted calibration, so optimistic); other groups keep
their names. Older names are read by what they contain (``dice_real_test`` is a test group,
``dice_real_val`` a validation group; see :func:`metric_groups`). Values may be numbers or
one level of nested dicts of numbers; ``lumbar-node models list`` shows them as
``group.key=value``, test first. Every figure must come from a command: the training
command recorded in the card or a script in ``benchmarks/`` that writes it
(:func:`update_card`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: Where cards and weights live; ``LUMBAR_NODE_WEIGHTS_DIR`` overrides it (e.g. a mounted volume).
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REQUIRED_FIELDS: tuple[str, ...] = (
    "name", "version", "task", "architecture", "weights", "sha256", "training_data", "split",
    "metrics", "command", "created",
)


class WeightsMismatchError(RuntimeError):
    """The weights on disk are not the ones the model card describes."""


def weights_dir(root: Path | None = None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("LUMBAR_NODE_WEIGHTS_DIR")
    return Path(env) if env else DEFAULT_WEIGHTS_DIR


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_card(card: dict[str, Any], source: str = "card") -> None:
    """Raise ValueError naming every missing or malformed required field."""
    missing = [f for f in REQUIRED_FIELDS if f not in card]
    if missing:
        raise ValueError(f"{source}: missing required fields {missing}")
    sha = card["sha256"]
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"{source}: sha256 must be 64 lowercase hex digits, got {sha!r}")
    if not isinstance(card["weights"], str) or Path(card["weights"]).name != card["weights"]:
        raise ValueError(f"{source}: weights must be a plain file name, got {card['weights']!r}")


def load_card(name: str, root: Path | None = None) -> dict[str, Any]:
    """The model card of a registered model (validated, not yet checked against the weights)."""
    path = weights_dir(root) / f"{name}.json"
    if not path.is_file():
        known = [c["name"] for c in list_models(root)]
        raise KeyError(f"no model {name!r} registered in {path.parent}; known: {known}")
    card = json.loads(path.read_text())
    validate_card(card, str(path))
    if card["name"] != name:
        raise ValueError(f"{path}: card name {card['name']!r} does not match file name {name!r}")
    return card


def verify(name: str, root: Path | None = None) -> Path:
    """Path of the model's weights, after checking their sha256 against the card."""
    card = load_card(name, root)
    weights = weights_dir(root) / card["weights"]
    if not weights.is_file():
        raise FileNotFoundError(f"model {name!r}: weights file {weights} is missing")
    actual = sha256_file(weights)
    if actual != card["sha256"]:
        raise WeightsMismatchError(
            f"model {name!r}: sha256 of {weights} is {actual}, card says {card['sha256']}; "
            "refusing to use these weights"
        )
    return weights


def list_models(root: Path | None = None) -> list[dict[str, Any]]:
    """Every card in the registry, each with ``sha256_ok`` (True, False, or None if unreadable)."""
    folder = weights_dir(root)
    models = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            card = json.loads(path.read_text())
            validate_card(card, str(path))
        except (ValueError, json.JSONDecodeError) as error:
            models.append({"name": path.stem, "error": str(error), "sha256_ok": None})
            continue
        weights = folder / card["weights"]
        ok = weights.is_file() and sha256_file(weights) == card["sha256"]
        models.append({**card, "sha256_ok": ok})
    return models


#: metric group kinds in the order a reader should see them
METRIC_KINDS: tuple[str, ...] = ("test", "validation", "other")


def metric_kind(group: str) -> str:
    """"test", "validation" or "other" for a metrics group name."""
    words = group.lower().replace("-", "_").split("_")
    if "test" in words:
        return "test"
    if "val" in words or "validation" in words:
        return "validation"
    return "other"


def metric_groups(metrics: dict[str, Any]
                  ) -> dict[str, list[tuple[str, list[tuple[str, float]]]]]:
    """Per kind (test, validation, other): ``(group, [(key, value), ...])`` in card order.

    A top-level number is a group of one; nested dicts of numbers are flattened (their
    keys joined with "."); non-numbers (seed lists, commands) and deeper per-patient
    breakdowns past two levels are left to the card itself.
    """
    out: dict[str, list[tuple[str, list[tuple[str, float]]]]] = {k: [] for k in METRIC_KINDS}

    def numbers(value: Any, prefix: str, depth: int) -> list[tuple[str, float]]:
        if isinstance(value, bool):
            return []
        if isinstance(value, int | float):
            return [(prefix, value)]
        if isinstance(value, dict) and depth > 0:
            return [kv for k, v in value.items()
                    for kv in numbers(v, f"{prefix}.{k}" if prefix else str(k), depth - 1)]
        return []

    for group, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[metric_kind(group)].append((group, [(group, value)]))
            continue
        figures = numbers(value, "", 2)
        if figures:
            out[metric_kind(group)].append((group, figures))
    return out


def training_data_kind(card: dict[str, Any]) -> str:
    """The card's ``training_data_kind``, or one read from ``training_data``'s keys
    (marked "inferred") for cards written before the field existed."""
    declared = card.get("training_data_kind")
    if declared:
        return str(declared)
    data = card.get("training_data")
    keys = set(data) if isinstance(data, dict) else set()
    kinds = [k for k in ("real", "synthetic") if k in keys]
    return ("+".join(kinds) + " (inferred)") if kinds else "undeclared"


def update_card(name: str, key_path: tuple[str, ...], value: Any,
                root: Path | None = None) -> Path:
    """Set one (nested) entry of a card, e.g. ``("metrics", "test")``, from a benchmark.

    The weights are verified first, so figures are never written into the card of weights
    that are not the ones it describes; the sha256 is kept, not recomputed.
    """
    if not key_path:
        raise ValueError("key_path must name at least one key")
    verify(name, root)
    card = load_card(name, root)
    node = card
    for key in key_path[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"{name}: {'.'.join(key_path)} crosses a non-object value")
    node[key_path[-1]] = value
    validate_card(card, name)
    path = weights_dir(root) / f"{name}.json"
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return path


def write_card(card: dict[str, Any], root: Path | None = None) -> Path:
    """Fill in the weights' sha256, validate and write ``<name>.json``."""
    folder = weights_dir(root)
    card = dict(card)
    card["sha256"] = sha256_file(folder / card["weights"])
    validate_card(card, card.get("name", "card"))
    path = folder / f"{card['name']}.json"
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return path
