"""``lumbar-node synth``: write one synthetic lumbar MR study with its ground truth."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    from .variants import VARIANTS

    parser.add_argument("--out", type=Path, required=True, help="study folder to write")
    parser.add_argument("--seed", type=int, default=0, help="patient seed (same seed, same bytes)")
    parser.add_argument("--stir", action="store_true", help="sagittal STIR instead of T2")
    parser.add_argument(
        "--grades", default=None,
        help="key=Grade,... (RSNA keys; 'default=Normal/Mild' sets the rest) or a JSON file; "
             "findings not named are drawn from the seed")
    parser.add_argument("--variant", action="append", default=[], choices=VARIANTS,
                        help="add a study variant (repeatable)")
    parser.add_argument("--axial", choices=("stack", "per-level"), default=None,
                        help="axial T2 as one stack or one angled block per disc (default: seed)")
    parser.add_argument("--preview", action="store_true", help="also write preview.png")
    parser.add_argument("--matrix", type=int, default=None,
                        help="sagittal matrix in pixels (smaller = faster; same field of view)")


def run(args: argparse.Namespace) -> int:
    from . import generate_study
    from .pathology import parse_grades

    t0 = time.perf_counter()
    try:
        grades = parse_grades(args.grades) if args.grades else None
        truth = generate_study(args.out, args.seed, stir=args.stir, grades=grades,
                               variants=args.variant, preview=args.preview, axial=args.axial,
                               matrix=args.matrix)
    except ValueError as exc:
        print(f"lumbar-node synth: error: {exc}", file=sys.stderr)
        return 2
    took = time.perf_counter() - t0
    series = ", ".join(f"{k}:{len(v['files'])}" for k, v in truth["series"].items())
    abnormal = sum(1 for g in truth["rsna"].values() if g != "Normal/Mild")
    print(f"synth seed={args.seed} out={args.out} series=[{series}] "
          f"abnormal_findings={abnormal}/{len(truth['rsna'])} "
          f"variants={','.join(truth['variants']) or '-'} in {took:.1f}s")
    return 0
