"""``lumbar-node train disc``: the per-disc grader from the expert gradings of spider-midsag.

Every graded lumbar disc the node finds (its own segmentation and level labelling on the
mid-sagittal T2 and T1, :mod:`models.discs.dataset`) is one sample. Patient-level k-fold
cross-validation (folds by patient, never by disc or image) gives out-of-fold logits for
every disc: the per-head temperatures are fitted on them, the figures per fold are computed
from the calibrated out-of-fold probabilities, and the out-of-distribution threshold is
their embedding scores' high percentile. The final model is then trained the same way on all
patients and shipped with those temperatures, that threshold and the CV figures (development
figures: the same patients chose the design). The segmentation's real test patients are
left out by default, so whole-study validation on them stays unseen.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from models.discs.dataset import (
    BINARY,
    DEFAULT_CACHE,
    DEFAULT_COPIES,
    HEADS,
    N_LOGITS,
    build_samples,
)
from models.discs.metrics import finding_metrics, headline, summarise, table
from models.discs.ood import EmbeddingStats, threshold_from

MODEL_NAME = "disc"
ARCHITECTURE = {"width": 16, "hidden": 64, "dropout": 0.3, "use_features": True,
                "use_signal": True}
FINDINGS: tuple[str, ...] = ("pfirrmann", "modic", *BINARY)
SUMMARY = ("Per-disc findings (Pfirrmann, Modic, endplates, herniation, bulging, narrowing, "
           "spondylolisthesis) learned from expert gradings of real SPIDER mid-sagittal T1/T2 "
           "MRI; figures are patient-level cross-validation on the training patients "
           "(development figures, no independent test set).")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True,
                        help="spider-midsag folder (images/, series.csv, gradings.csv)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("models/weights"))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20250)
    parser.add_argument("--copies", type=int, default=DEFAULT_COPIES,
                        help="jittered crops cached per disc and image")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--include-test", action="store_true",
                        help="also train on the segmentation's real test patients")
    parser.add_argument("--cv-only", action="store_true",
                        help="cross-validate and print the figures; write no weights")
    parser.add_argument("--json", type=Path, default=None, help="write the CV figures here")


def _targets(data: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {name: data[name][idx] for name in HEADS}


def cross_validate(data: dict[str, np.ndarray], folds: int, epochs: int, seed: int,
                   log: bool = True) -> dict:
    """Out-of-fold logits, embedding scores, temperatures and per-fold figures."""
    from models.discs.fit import (
        fit_temperatures,
        infer,
        patient_folds,
        probabilities,
        train_net,
    )

    fold_of = patient_folds(data["patient"], folds, seed)
    fold = np.array([fold_of[str(p)] for p in data["patient"]])
    n = len(fold)
    logits = np.zeros((n, N_LOGITS), np.float32)
    scores = np.zeros(n)
    for k in range(folds):
        test, train = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        if log:
            print(f"  fold {k + 1}/{folds}: {len(train)} train discs, {len(test)} held out",
                  flush=True)
        net = train_net(data, train, epochs=epochs, seed=seed + k, architecture=ARCHITECTURE,
                        log=log)
        logits[test], emb_test = infer(net, data, test)
        stats = EmbeddingStats.fit(infer(net, data, train)[1])
        scores[test] = stats.score(emb_test)
    everything = np.arange(n)
    temperatures = fit_temperatures(logits, data, everything)
    probs = probabilities(logits, temperatures)
    per_fold = []
    for k in range(folds):
        test = np.flatnonzero(fold == k)
        per_fold.append(finding_metrics({h: p[test] for h, p in probs.items()},
                                        _targets(data, test)))
    pooled = finding_metrics(probs, _targets(data, everything))
    return {"fold": fold, "logits": logits, "scores": scores, "temperatures": temperatures,
            "per_fold": per_fold, "summary": summarise(per_fold), "pooled": pooled}


def _command(args: argparse.Namespace) -> str:
    if sys.argv[1:3] == ["train", "disc"]:
        return shlex.join(["lumbar-node", "train", "disc", *sys.argv[3:]])
    return (f"lumbar-node train disc --data {args.data} --folds {args.folds} --out {args.out} "
            f"--epochs {args.epochs} --seed {args.seed} --copies {args.copies}")


def run(args: argparse.Namespace) -> int:
    import torch

    from models.discs.fit import infer, train_net
    from models.registry import load_card, write_card

    if args.folds < 2:
        raise ValueError(f"--folds must be at least 2, got {args.folds}")
    if not (args.data / "series.csv").is_file() or not (args.data / "gradings.csv").is_file():
        raise ValueError(f"--data {args.data} must hold series.csv and gradings.csv")
    torch.set_num_threads(max(1, args.threads))
    started = time.time()
    excluded = [] if args.include_test else list(load_card("segmentation")["split"]["test"])
    print(f"building disc samples (segmenting {args.data}; cached in {args.cache}) ...")
    data = build_samples(args.data, args.cache, args.copies, set(excluded), seed=args.seed)
    patients = sorted(set(data["patient"].tolist()), key=lambda p: (len(p), p))
    print(f"{len(data['patient'])} graded discs found by the node, {len(patients)} patients")
    cv = cross_validate(data, args.folds, args.epochs, args.seed)
    threshold = threshold_from(cv["scores"])
    print(f"\npatient-level {args.folds}-fold CV (calibrated out-of-fold probabilities):")
    print(table(cv["summary"]))
    figures = {"summary": cv["summary"], "pooled_out_of_fold": cv["pooled"],
               "per_fold": cv["per_fold"], "temperatures": cv["temperatures"],
               "ood_threshold": threshold, "discs": len(data["patient"]),
               "patients": len(patients)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
    if args.cv_only:
        return 0
    print("training the final model on all patients ...", flush=True)
    everything = np.arange(len(data["patient"]))
    net = train_net(data, everything, epochs=args.epochs, seed=args.seed + 100,
                    architecture=ARCHITECTURE, log=True)
    stats = EmbeddingStats.fit(infer(net, data, everything)[1])
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half() if v.is_floating_point() else v
             for k, v in net.state_dict().items()}
    state.update({k: torch.as_tensor(v) for k, v in stats.to_arrays().items()})
    torch.save(state, args.out / f"{MODEL_NAME}.pt")
    in_sample = float(np.mean(stats.score(infer(net, data, everything)[1]) > threshold))
    created = datetime.now(UTC).replace(microsecond=0)
    card = {
        "summary": SUMMARY,
        "name": MODEL_NAME,
        "version": created.strftime("%Y.%m.%d") + f"-cv{args.folds}s{args.seed}",
        "task": "per-disc findings on mid-sagittal MRI: Pfirrmann 1-5, Modic 0-3, endplate "
                "changes (upper/lower), herniation, bulging, narrowing, spondylolisthesis",
        "training_data_kind": "real",
        "validated_on_real": [],
        "findings": list(FINDINGS),
        "architecture": {
            "class": "models.discs.net.DiscNet", "args": ARCHITECTURE,
            "description": "MONAI 2-D ResNet (layers 1-1-1-1) over the disc-aligned T2 and "
                           "T1 crops (2 channels, 48 x 64 px at 1 mm: 48 mm along the spine, "
                           "64 mm antero-posterior, centre 6 mm behind the disc centre) + "
                           "MLP head with presence flags, level, measured disc heights and "
                           "the T2/T1 signal ratios of nucleus, CSF, marrow and endplate "
                           "bands (models.discs.signal); one temperature per head"},
        "weights": f"{MODEL_NAME}.pt",
        "sha256": "",
        "training_data": {
            "source": "spider-midsag (SPIDER, van der Graaf et al. 2024, CC-BY 4.0): "
                      "mid-sagittal T1/T2 PNGs and SPIDER's per-disc radiological gradings",
            "discs": len(data["patient"]), "patients": len(patients),
            "discs_with_t2": int(data["presence"][:, 0].sum()),
            "discs_with_t1": int(data["presence"][:, 1].sum()),
            "input_path": "node segmentation -> models.levels.label_levels -> "
                          "models.discs.crops.disc_crop (slice nearest the disc centre)",
            "excluded_patients": excluded,
            "excluded_why": "the segmentation's real test patients, kept unseen",
            "jittered_copies": args.copies},
        "split": {"train": patients, "val": [], "test": [],
                  "cv_folds": args.folds, "cv_seed": args.seed, "by": "patient"},
        "metrics": {"validation_cv": {
            "kind": "development figures: patient-level cross-validation on the training "
                    "patients (design chosen on them), calibrated out-of-fold probabilities",
            **{f: cv["summary"][f] for f in FINDINGS}},
            "validation_cv_means": headline(cv["summary"])},
        "calibration": {"temperatures": cv["temperatures"], "tta_copies": args.copies,
                        "fitted_on": "out-of-fold logits of the patient-level CV",
                        "note": "class-balanced training: probabilities are those of balanced "
                                "classes; 'present' is probability >= 0.5"},
        "ood": {"method": "Mahalanobis distance of the multi-scale crop embedding (shrunk "
                          "covariance) over the training discs' median distance",
                "threshold": round(threshold, 4),
                "fitted_on": "99th percentile of out-of-fold discs' scores (fold models)",
                "flag_rates": {"out_of_fold": round(float(np.mean(cv["scores"] > threshold)), 4),
                               "training_in_sample": round(in_sample, 4)}},
        "command": _command(args),
        "created": created.isoformat(),
        "training_time_s": round(time.time() - started, 1),
        "device": "cpu",
    }
    path = write_card(card, root=args.out)
    print(f"wrote {args.out / (MODEL_NAME + '.pt')} and {path}")
    return 0
