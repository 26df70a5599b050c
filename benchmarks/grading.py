"""Grading benchmark on synthetic studies the learned grader never saw.

Usage: ``.venv/bin/python benchmarks/grading.py --studies 30 --seed 900000``

Levels come from each study's ground truth (as in training), so the numbers isolate the
graders from segmentation error. Prints, for the learned and the measurement grader beside
the uniform baseline: the RSNA 2024 score and its ratio to the baseline, per-condition
confusion matrices, whether any Severe finding was called Normal/Mild, LSS 4-grade accuracy
and macro-F1 (learned grader), and CPU time per study of ``grade_study``.

``--write-card`` writes the learned grader's figures into its card as ``metrics.test``
(these seeds are never used for training, epoch selection or calibration; the weights are
verified before the card is touched). Run it once per set of weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lumbar_common.vocabulary import CONDITIONS, GRADES, SIDES, finding_keys, rsna_key
from models.grading.metric import confusion_matrix, lss_scores, rsna_score, uniform_predictions

UNIFORM = [1 / 3, 1 / 3, 1 / 3]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=30)
    p.add_argument("--seed", type=int, default=900000, help="first seed (outside training)")
    p.add_argument("--work", type=Path, default=None, help="keep generated studies here")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument("--write-card", action="store_true",
                   help="write the learned grader's figures into its card as metrics.test")
    return p


def card_test_block(report: dict, args: argparse.Namespace) -> dict:
    """The learned grader's ``metrics.test`` group, from this run's report."""
    learned = report["learned"]
    block = {"studies": report["studies"], "seeds": report["seeds"],
             "levels": "ground truth", "rsna_score": round(learned["rsna"]["score"], 4)}
    block.update({k: round(v, 4) for k, v in learned["rsna"].items() if k != "score"})
    block.update({"uniform_score": round(report["uniform"]["score"], 4),
                  "ratio_to_uniform": round(learned["ratio_to_uniform"], 4),
                  "severe_called_normal_mild": learned["severe_called_normal_mild"],
                  "not_assessable": learned["not_assessable"]})
    if "lss" in learned:
        block.update({"lss_accuracy": round(learned["lss"]["accuracy"], 4),
                      "lss_macro_f1": round(learned["lss"]["macro_f1"], 4)})
    block["command"] = (f"python benchmarks/grading.py --studies {args.studies} "
                        f"--seed {args.seed} --write-card")
    return block


def _check_unseen(seeds: list[int], card: dict) -> None:
    lo, hi = card.get("training_data", {}).get("seeds", [0, -1])
    overlap = [s for s in seeds if lo <= s <= hi]
    if overlap:
        raise ValueError(f"benchmark seeds {overlap[:3]}… were used for training ({lo}..{hi})")


def main(argv: list[str] | None = None) -> int:
    from models.grading.grade import grade_study
    from models.grading.learned_grader import LearnedGrader, LearnedUnavailable
    from models.grading.measurement_grader import MeasurementGrader
    from models.grading.synthetic import load_synthetic
    from models.synth import generate_study

    args = _parser().parse_args(argv)
    seeds = list(range(args.seed, args.seed + args.studies))
    try:
        learned: LearnedGrader | None = LearnedGrader.load("cpu")
        _check_unseen(seeds, learned.card)
    except LearnedUnavailable as exc:
        print(f"learned grader unavailable: {exc}")
        learned = None
    measurer = MeasurementGrader()
    work = args.work or Path(tempfile.mkdtemp(prefix="grading-bench-"))
    truth_all: dict[str, dict[str, str]] = {}
    preds: dict[str, dict[str, dict[str, list[float]]]] = {"learned": {}, "measurement": {}}
    unassessed = {"learned": 0, "measurement": 0}
    lss_true: list[int] = []
    lss_pred: list[int] = []
    times: list[float] = []
    for seed in seeds:
        study = work / f"study_{seed}"
        if not (study / "truth.json").exists():
            generate_study(study, seed)
        anatomy, truth = load_synthetic(study)
        sid = str(seed)
        truth_all[sid] = dict(truth["rsna"])
        t0 = time.perf_counter()
        grade_study(anatomy, "cpu")
        times.append(time.perf_counter() - t0)
        levels = {lv.level: lv for lv in anatomy.levels}
        learned_out = learned.predict(anatomy) if learned else {}
        for name in preds:
            preds[name][sid] = {}
        for cond, side, level in finding_keys():
            key = rsna_key(cond, side, level)
            m = measurer.grade(anatomy, levels[level], cond, side)
            preds["measurement"][sid][key] = m.probabilities or UNIFORM
            unassessed["measurement"] += m.probabilities is None
            lp = learned_out.get(level, {}).get((cond, side), {})
            preds["learned"][sid][key] = lp.get("probabilities") or UNIFORM
            unassessed["learned"] += lp.get("probabilities") is None
            if "lss_probabilities" in lp:
                lss_true.append(int(truth["levels"][level]["lss_foraminal_grade"][side]))
                lss_pred.append(int(np.argmax(lp["lss_probabilities"])))
    baseline = rsna_score(truth_all, uniform_predictions(truth_all))
    report: dict = {"studies": len(seeds), "seeds": [seeds[0], seeds[-1]],
                    "uniform": baseline, "grade_study_s_per_study": {
                        "mean": float(np.mean(times)), "max": float(np.max(times))}}
    print(f"{len(seeds)} unseen synthetic studies (seeds {seeds[0]}..{seeds[-1]}), "
          f"levels from ground truth")
    print(f"uniform baseline RSNA score {baseline['score']:.4f} (ln 3 = {np.log(3):.4f} "
          "per group)")
    for name, pred in preds.items():
        if name == "learned" and learned is None:
            continue
        s = rsna_score(truth_all, pred)
        groups = ", ".join(f"{k} {v:.3f}" for k, v in s.items() if k != "score")
        print(f"\n== {name} grader: RSNA score {s['score']:.4f} = "
              f"{s['score'] / baseline['score']:.2f} x uniform ({groups}); "
              f"{unassessed[name]} findings not assessable (scored as uniform)")
        entry: dict = {"rsna": s, "ratio_to_uniform": s["score"] / baseline["score"],
                       "not_assessable": unassessed[name], "confusion": {}}
        missed_severe = 0
        for cond in CONDITIONS:
            yt, yp = [], []
            for sid, labels in truth_all.items():
                for key, grade in labels.items():
                    if cond in key:
                        yt.append(GRADES.index(grade))
                        yp.append(int(np.argmax(pred[sid][key])))
            cm = confusion_matrix(yt, yp, 3)
            missed_severe += int(cm[2, 0])
            entry["confusion"][cond] = cm.tolist()
            print(f"  {cond} (rows true N/M, Mod, Sev; cols predicted):")
            for g, row in zip(GRADES, cm, strict=True):
                print(f"    {g:<12} {row.tolist()}")
        entry["severe_called_normal_mild"] = missed_severe
        print(f"  Severe called Normal/Mild: {missed_severe}")
        report[name] = entry
    if lss_true:
        lss = lss_scores(lss_true, lss_pred)
        report["learned"]["lss"] = lss
        print(f"\nLSS 4-grade foramina (learned): accuracy {lss['accuracy']:.3f}, macro-F1 "
              f"{lss['macro_f1']:.3f} over {len(lss_true)} foramina (paper: 0.72 / 0.61)")
    print(f"\ngrade_study on CPU: {np.mean(times):.2f} s/study mean, {np.max(times):.2f} s max "
          f"(both graders, {len(SIDES) * 10 + 5} findings)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.write_card:
        if learned is None:
            print("no learned grader: nothing written into a card")
            return 1
        from models import registry

        path = registry.update_card("grader", ("metrics", "test"), card_test_block(report, args))
        print(f"wrote metrics.test into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
