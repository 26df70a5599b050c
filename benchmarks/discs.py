"""Disc grader figures: patient-level k-fold cross-validation on spider-midsag.

The same samples (node segmentation -> level labelling -> disc-aligned crops, cached under
/tmp), folds, training loop and temperature calibration as ``lumbar-node train disc``, in
evaluation mode: nothing is written to the weights. Per finding, mean and sd over folds of
balanced accuracy, linear-weighted kappa (Pfirrmann, Modic), the share off by more than one
grade (Pfirrmann), Modic presence balanced accuracy and AUC of the binary findings, from the
calibrated out-of-fold probabilities. Development figures: the design was chosen on these
patients, and SPIDER's held-out quarter is not in this folder.

    .venv/bin/python benchmarks/discs.py [--data DIR] [--folds 5] [--json out.json]
        [--write-card]   # store the figures as metrics.validation_cv of models/weights/disc.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from models.discs.dataset import DEFAULT_CACHE, DEFAULT_COPIES, build_samples
from models.discs.metrics import headline, table
from models.discs.train import FINDINGS, MODEL_NAME, cross_validate
from models.realdata.spider import realdata_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=realdata_root() / "spider-midsag")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20250)
    parser.add_argument("--copies", type=int, default=DEFAULT_COPIES)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--include-test", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from models.registry import load_card, update_card

    torch.set_num_threads(args.threads)
    started = time.time()
    excluded = set() if args.include_test else set(load_card("segmentation")["split"]["test"])
    data = build_samples(args.data, args.cache, args.copies, excluded, seed=args.seed)
    cv = cross_validate(data, args.folds, args.epochs, args.seed, log=False)
    print(f"disc grader, patient-level {args.folds}-fold CV: {len(data['patient'])} discs, "
          f"{len(set(data['patient'].tolist()))} patients ({time.time() - started:.0f} s)")
    print(table(cv["summary"]))
    if args.json:
        args.json.write_text(json.dumps({"summary": cv["summary"], "per_fold": cv["per_fold"],
                                         "temperatures": cv["temperatures"]}, indent=1))
    if args.write_card:
        update_card(MODEL_NAME, ("metrics", "validation_cv"), {
            "kind": "development figures: patient-level cross-validation on the training "
                    "patients (design chosen on them), calibrated out-of-fold probabilities",
            **{f: cv["summary"][f] for f in FINDINGS},
            "command": "python benchmarks/discs.py --write-card"})
        update_card(MODEL_NAME, ("metrics", "validation_cv_means"), headline(cv["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
