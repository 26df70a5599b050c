"""`lumbar-node models list`: what the node will run, whether the weights are intact, and
what the card's figures are worth.

One summary table (name, version, training-data kind, sha256 status), then per model its
task, whether it was validated on real images, and its figures: held-out test figures first
and labelled "test", validation figures (used to pick the epoch or calibrate) after them
and labelled so, everything wrapped to the terminal width instead of one long line.
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
from pathlib import Path
from typing import Any

#: kind -> label shown before a model's figures of that kind
KIND_LABELS: dict[str, str] = {
    "test": "test (held out)",
    "validation": "validation (selection/calibration)",
    "other": "other",
}

#: figures shown per metrics group
MAX_FIGURES = 12


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list"], nargs="?", default="list")
    parser.add_argument(
        "--dir", type=Path, default=None,
        help="registry folder (default: models/weights, or $LUMBAR_NODE_WEIGHTS_DIR)")
    parser.add_argument("--width", type=int, default=None,
                        help="wrap at this many columns (default: the terminal, at most 100)")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return str(int(value))
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}"


def figure_lines(metrics: dict[str, Any], width: int, indent: str = "  ") -> list[str]:
    """The card's figures as wrapped, labelled lines: test, then validation, then other.

    One heading per kind, then one wrapped paragraph per metrics group (named unless the
    group is the kind itself, e.g. ``metrics.test``), at most ``MAX_FIGURES`` figures each:
    per-patient breakdowns stay in the card.
    """
    from models.registry import METRIC_KINDS, metric_groups

    groups = metric_groups(metrics)
    lines: list[str] = []
    for kind in METRIC_KINDS:
        if not groups[kind]:
            continue
        lines.append(f"{indent}{KIND_LABELS[kind]}:")
        for group, figures in groups[kind]:
            head = "" if group == kind else f"{group}: "
            text = head + "  ".join(f"{k}={_number(v)}" for k, v in figures[:MAX_FIGURES])
            if len(figures) > MAX_FIGURES:
                text += f"  (+{len(figures) - MAX_FIGURES} more in the card)"
            lines += textwrap.wrap(text, width=width, initial_indent=indent * 2,
                                   subsequent_indent=indent * 4, break_on_hyphens=False)
    return lines or [f"{indent}no figures"]


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render(models: list[dict[str, Any]], width: int = 100) -> str:
    """The whole listing as text (tested directly; ``run`` prints it)."""
    from models.registry import training_data_kind

    rows: list[tuple[str, ...]] = [("name", "version", "training data", "sha256")]
    blocks: list[str] = []
    for card in models:
        status = {True: "ok", False: "MISMATCH", None: "INVALID"}[card["sha256_ok"]]
        if "error" in card:
            rows.append((card["name"], "-", "-", status))
            blocks += [f"\n{card['name']}:"] + textwrap.wrap(
                card["error"], width=width, initial_indent="  ", subsequent_indent="  ")
            continue
        rows.append((card["name"], str(card["version"]), training_data_kind(card),
                     f"{status} {card['sha256'][:12]}"))
        real = card.get("validated_on_real")
        real_text = ("not declared" if real is None
                     else ", ".join(real) if real else "none")
        blocks.append(f"\n{card['name']}:")
        blocks += textwrap.wrap(f"task: {card['task']}", width=width, initial_indent="  ",
                                subsequent_indent="        ")
        blocks.append(f"  validated on real images: {real_text}")
        blocks += figure_lines(card.get("metrics", {}), width)
    return "\n".join(_table(rows) + blocks)


def run(args: argparse.Namespace) -> int:
    from models.registry import list_models

    models = list_models(args.dir)
    if not models:
        print("no registered models")
        return 1
    width = args.width or min(100, shutil.get_terminal_size((100, 24)).columns)
    print(render(models, max(40, width)))
    return 0 if all(c["sha256_ok"] for c in models) else 1
