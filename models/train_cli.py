"""`lumbar-node train segmentation|grader|disc ...`: one entry point for every trainable model.

The grader's options live with the grader (``models.grading.train``); this module only routes
to it, so either trainer can change its flags without touching the other.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path


def _configure_segmentation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("models/weights"),
                        help="folder for the weights and the model card")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic-studies", type=int, default=0,
                        help="synthetic studies generated and added to the real slices")
    parser.add_argument("--synthetic-dir", type=Path, default=Path("/tmp/lumbar-node-synth"),
                        help="cache for generated synthetic studies")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=8)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    _configure_segmentation(sub.add_parser("segmentation", help="slice-wise 2-D segmentation"))
    try:  # the grader's own options (a REMAINDER positional cannot take leading --options)
        grading_train = importlib.import_module("models.grading.train")
    except ImportError:
        grading_train = None
    if grading_train is not None:
        grading_train.configure(sub.add_parser("grader", help="learned stenosis grader"))
    else:
        grader = sub.add_parser("grader", help="learned stenosis grader (models.grading.train)",
                                add_help=False)
        grader.add_argument("grader_args", nargs=argparse.REMAINDER)
    importlib.import_module("models.discs.train").configure(
        sub.add_parser("disc", help="per-disc findings from real expert gradings"))


def _run_grader(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module("models.grading.train")
    except ImportError as error:
        print(f"grader training is not available: {error}", file=sys.stderr)
        return 2
    if not hasattr(args, "grader_args"):
        return int(module.run(args) or 0)
    parser = argparse.ArgumentParser(prog="lumbar-node train grader")
    module.configure(parser)
    return int(module.run(parser.parse_args(args.grader_args)) or 0)


def run(args: argparse.Namespace) -> int:
    if args.model == "grader":
        return _run_grader(args)
    if args.model == "disc":
        return int(importlib.import_module("models.discs.train").run(args) or 0)
    from models.segmentation.train import TrainConfig, train

    config = TrainConfig(
        out_dir=args.out, epochs=args.epochs, seed=args.seed,
        synthetic_studies=args.synthetic_studies, synthetic_dir=args.synthetic_dir,
        device=args.device, batch_size=args.batch_size,
        command=shlex.join(["lumbar-node", "train", "segmentation", *sys.argv[3:]])
        if sys.argv[1:3] == ["train", "segmentation"] else
        f"lumbar-node train segmentation --out {args.out} --epochs {args.epochs} "
        f"--seed {args.seed} --synthetic-studies {args.synthetic_studies} "
        f"--device {args.device} --batch-size {args.batch_size}",
    )
    train(config)
    return 0
