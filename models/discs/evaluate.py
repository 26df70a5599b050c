"""``lumbar-node evaluate disc --data DIR --predictions-out CSV``: the disc grader on a folder.

The folder has the shared layout of ``spider-midsag`` (``images/<pid>_t2.png`` and
``_t1.png``, ``series.csv`` with the row and column spacings, optionally ``gradings.csv``).
Every patient with a T2 image goes through the node's own path — segmentation, level
labelling (T1 labelled on its own), :class:`models.discs.infer.DiscGrader` — and each disc
found is one CSV row. With gradings present the agreement figures are printed (one pass,
no folds): on patients the model was trained on they are training figures, not validation.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from models.discs.dataset import BINARY, HEADS

EXPERT = {"pfirrmann": "pfirrmann", "modic": "modic", "endplate_upper": "endplate_upper",
          "endplate_lower": "endplate_lower", "herniation": "herniation",
          "bulging": "bulging", "narrowing": "narrowing", "spondylolisthesis": "listhesis"}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model", required=True, metavar="MODEL")
    disc = sub.add_parser("disc", help="per-disc findings on a folder of mid-sagittal images")
    disc.add_argument("--data", type=Path, required=True,
                      help="folder with images/, series.csv and optionally gradings.csv")
    disc.add_argument("--predictions-out", type=Path, required=True, help="CSV, one row a disc")
    disc.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def _row(patient: str, entry: dict) -> dict:
    row: dict = {"patient": patient, "level": entry["level"],
                 "assessable": entry["assessable"], "reason": entry["reason"] or "",
                 "pfirrmann_grade": entry["pfirrmann"]["grade"],
                 "modic_type": entry["modic"]["type"]}
    for name, key in (("pfirrmann", "p"), ("modic", "p")):
        probs = entry[name]["probabilities"] or [None] * (5 if name == "pfirrmann" else 4)
        first = 1 if name == "pfirrmann" else 0
        row.update({f"{name}_{key}{k + first}": v for k, v in enumerate(probs)})
    for name in BINARY:
        row[f"{name}_present"] = entry[name]["present"]
        row[f"{name}_probability"] = entry[name]["probability"]
    row.update({"ood_flagged": entry["ood"]["flagged"], "ood_score": entry["ood"]["score"],
                "model_version": entry["model_version"]})
    return row


def _metrics(rows: list[dict], gradings: dict) -> tuple[dict, int]:
    from models.discs.metrics import finding_metrics

    graded = [(r, gradings[(r["patient"], r["level"])]) for r in rows
              if r["assessable"] and (r["patient"], r["level"]) in gradings]
    if not graded:
        return {}, 0
    probs: dict[str, np.ndarray] = {
        "pfirrmann": np.array([[r[f"pfirrmann_p{k}"] for k in range(1, 6)] for r, _ in graded]),
        "modic": np.array([[r[f"modic_p{k}"] for k in range(4)] for r, _ in graded])}
    targets = {"pfirrmann": np.array([g.pfirrmann - 1 for _, g in graded]),
               "modic": np.array([g.modic for _, g in graded])}
    for name in BINARY:
        probs[name] = np.array([r[f"{name}_probability"] for r, _ in graded])
        targets[name] = np.array([int(getattr(g, EXPERT[name])) for _, g in graded])
    assert set(probs) == set(HEADS)
    return finding_metrics(probs, targets), len(graded)


def run(args: argparse.Namespace) -> int:
    from models.discs.infer import DiscGrader
    from models.discs.metrics import summarise, table
    from models.pipeline import load_segmenter
    from models.realdata.midsag import load_midsag_volume
    from models.realdata.spider import load_gradings, midsag_images

    if not (args.data / "series.csv").is_file():
        raise ValueError(f"--data {args.data} has no series.csv")
    images = {(m.patient, m.sequence): m for m in midsag_images(args.data)}
    segmenter = load_segmenter(args.device)
    grader = DiscGrader.load(args.device)

    def volume(patient: str, sequence: str) -> object:
        m = images.get((patient, sequence))
        if m is None or not m.path.is_file():
            return None
        return load_midsag_volume(m.path, m.row_mm, m.col_mm, f"{patient}_{sequence}",
                                  m.slice_thickness_mm, role=f"sag_{sequence}")

    rows: list[dict] = []
    patients = sorted({p for p, _ in images}, key=lambda p: (len(p), p))
    skipped = []
    for patient in patients:
        t2 = volume(patient, "t2")
        if t2 is None:
            skipped.append(patient)
            continue
        t1 = volume(patient, "t1")
        for entry in grader.predict_images(segmenter, t2, t1):  # type: ignore[arg-type]
            rows.append(_row(patient, entry))
    args.predictions_out.parent.mkdir(parents=True, exist_ok=True)
    with args.predictions_out.open("w", newline="") as fh:
        fields = list(rows[0]) if rows else ["patient", "level"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} discs of {len(patients) - len(skipped)} patients written to "
          f"{args.predictions_out} ({grader.model_version}); "
          f"{len(skipped)} patients without a T2 image skipped")
    flagged = sum(bool(r["ood_flagged"]) for r in rows)
    print(f"out-of-distribution discs: {flagged}/{len(rows)}")
    if (args.data / "gradings.csv").is_file():
        metrics, n = _metrics(rows, load_gradings(args.data / "gradings.csv"))
        if metrics:
            print(f"agreement with the expert on {n} graded assessable discs (one pass; "
                  "training figures for patients the model was trained on):")
            print(table(summarise([metrics])))
    return 0
