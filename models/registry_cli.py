"""`lumbar-node models list`: what the node will run, and whether the weights are intact."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list"], nargs="?", default="list")
    parser.add_argument(
        "--dir", type=Path, default=None,
        help="registry folder (default: models/weights, or $LUMBAR_NODE_WEIGHTS_DIR)")


def key_metrics(metrics: dict[str, Any], limit: int = 6) -> str:
    """Flatten the top-level numbers and one level of nested numbers as ``group.key=0.912``.

    Held-out ("test") groups come first: they are the numbers a reader should trust.
    """
    parts = []
    for group, value in sorted(metrics.items(), key=lambda kv: "test" not in kv[0]):
        if isinstance(value, int | float):
            parts.append(f"{group}={value:.3g}")
        elif isinstance(value, dict):
            parts += [f"{group}.{k}={v:.3f}" for k, v in value.items()
                      if isinstance(v, int | float)]
    return " ".join(parts[:limit]) or "-"


def run(args: argparse.Namespace) -> int:
    from models.registry import list_models

    models = list_models(args.dir)
    if not models:
        print("no registered models")
        return 1
    rows = [("name", "version", "task", "sha256", "key metrics")]
    for card in models:
        status = {True: "ok", False: "MISMATCH", None: "INVALID"}[card["sha256_ok"]]
        if "error" in card:
            rows.append((card["name"], "-", "-", status, card["error"]))
            continue
        rows.append((card["name"], str(card["version"]), str(card["task"]),
                     f"{status} {card['sha256'][:12]}", key_metrics(card["metrics"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0 if all(c["sha256_ok"] for c in models) else 1
