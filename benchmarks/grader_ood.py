"""How often the learned grader's out-of-distribution gate flags its input, by kind of input.

Usage: ``.venv/bin/python benchmarks/grader_ood.py [--studies 20 --seed 900000] [--write-card]``

Four kinds of input, each scored crop by crop (per condition group):
- synthetic validation studies (the card's ``split.val``, every geometry draw): the studies
  that set each group's limit, so about 1 % flagged by construction;
- synthetic test studies (seeds never used for training or calibration, the grading
  benchmark's seeds), levels from ground truth;
- real lumbar MRI: every SPIDER T2-SPACE patient in ``shared/realdata/spider-t2space-2d``
  (0.94 mm pixels, 0.9 mm between slices) as a sagittal T2 volume, levels named by the
  pipeline's own level labelling on the expert masks and measured like any study. Only the
  canal is graded there (no sagittal T1 or axial T2 in that set);
- non-lumbar input: the synthetic test studies with every series replaced by noise.

Also printed: the learned grader's canal grades on the real levels, flagged or not.
``--write-card`` writes the flag rates into the card's ``ood.flag_rates`` (the weights are
verified first).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from lumbar_common.vocabulary import CANAL, FORAMEN, GRADES
from models.grading.learned_grader import LearnedGrader
from models.study import StudyAnatomy, Volume

GROUP_OF = {CANAL: "canal", FORAMEN: "foramen"}
COMMAND = "python benchmarks/grader_ood.py --studies {studies} --seed {seed} --write-card"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=20, help="synthetic test studies")
    p.add_argument("--seed", type=int, default=900000, help="first test seed (unseen)")
    p.add_argument("--noise-studies", type=int, default=5,
                   help="test studies also scored with every series replaced by noise")
    p.add_argument("--work", type=Path, default=None, help="keep generated studies here")
    p.add_argument("--write-card", action="store_true",
                   help="write the flag rates into models/weights/grader.json (ood.flag_rates)")
    return p


class Tally:
    """Flagged / scored crops per condition group, and the scores themselves."""

    def __init__(self) -> None:
        self.scores: dict[str, list[float]] = {}
        self.flags: dict[str, list[bool]] = {}

    def add(self, group: str, score: float, flagged: bool) -> None:
        self.scores.setdefault(group, []).append(score)
        self.flags.setdefault(group, []).append(flagged)

    def add_predictions(self, pred: dict[str, dict]) -> None:
        for out in pred.values():
            for (condition, _side), entry in out.items():
                if entry.get("ood"):
                    group = GROUP_OF.get(condition, "subarticular")
                    self.add(group, entry["ood"]["score"], entry["ood"]["flagged"])

    def summary(self) -> dict:
        out = {}
        for group in ("canal", "foramen", "subarticular"):
            flags = self.flags.get(group, [])
            if not flags:
                out[group] = {"crops": 0, "flagged": 0, "rate": None}
                continue
            s = np.asarray(self.scores[group])
            out[group] = {"crops": len(flags), "flagged": int(sum(flags)),
                          "rate": round(float(np.mean(flags)), 4),
                          "median_score": round(float(np.median(s)), 3)}
        return out


def validation_tally(grader: LearnedGrader) -> Tally:
    """Every geometry draw of the card's validation studies, from the training cache."""
    from models.grading.dataset import build_cache, load_cache
    from models.grading.grader_ood import GROUP_CROPS, GROUP_PRESENCE, embed_split
    from models.grading.train import DEFAULT_CACHE

    lo, hi = grader.card["split"]["val"]
    copies = int(grader.card["training_data"].get("copies_per_level", 2))
    data = load_cache(build_cache(DEFAULT_CACHE / "grader", list(range(lo, hi + 1)), copies))
    _, _, emb = embed_split(grader.net, data, "cpu")
    tally = Tally()
    for group, crops in GROUP_CROPS.items():
        flag = GROUP_PRESENCE[group]
        ok = np.ones(len(data["presence"]), bool) if flag is None else data["presence"][:, flag] > 0
        for crop in crops:
            for score in grader.gate.scores(group, emb[crop][ok]):
                tally.add(group, float(score), bool(score > 1.0))
    return tally


def noisy(anatomy: StudyAnatomy, rng: np.random.Generator) -> StudyAnatomy:
    """The same study geometry with every series' pixels replaced by noise."""
    def swap(v: Volume) -> Volume:
        scale = float(np.percentile(v.array, 99)) or 1.0
        return replace(v, array=np.abs(rng.normal(0.3, 0.3, v.array.shape)).astype(
            np.float32) * scale)

    vols = {k: swap(v) for k, v in anatomy.volumes.items()}
    return replace(anatomy, volumes=vols, axial_stacks=[swap(v) for v in anatomy.axial_stacks])


def real_anatomies() -> list[tuple[str, StudyAnatomy]]:
    """SPIDER T2-SPACE patients as a sagittal T2 study: levels and measurements from the
    expert masks through the pipeline's level labelling and measurement code."""
    from models.levels import label_levels
    from models.measurements import measure_levels
    from models.realdata.spider import load_t2space, t2space_patients

    out = []
    for patient in t2space_patients():
        d = load_t2space(patient)
        n, rows, cols = d.images.shape
        affine = np.eye(4)  # slices along +x (left), rows head->feet (-z), cols +y (posterior)
        affine[:3, 0] = [d.slice_mm, 0, 0]
        affine[:3, 1] = [0, 0, -d.pixel_mm[0]]
        affine[:3, 2] = [0, d.pixel_mm[1], 0]
        affine[:3, 3] = [-(n - 1) / 2 * d.slice_mm, -cols * d.pixel_mm[1] / 2,
                         rows * d.pixel_mm[0] / 2]
        uid = f"spider-{patient}"
        vol = Volume("sag_t2", uid, d.images.astype(np.float32), affine,
                     tuple(f"{uid}.{k}" for k in range(n)), "SPIDER T2-SPACE")
        labelling = label_levels(vol, d.labels)
        anatomy = StudyAnatomy(uid, {"sag_t2": vol}, labels=labelling.labels,
                               levels=labelling.levels)
        anatomy.measurements, _ = measure_levels(vol, d.labels, labelling)
        out.append((patient, anatomy))
    return out


def main(argv: list[str] | None = None) -> int:
    from models import registry
    from models.grading.synthetic import load_synthetic
    from models.synth import generate_study

    args = _parser().parse_args(argv)
    t0 = time.perf_counter()
    grader = LearnedGrader.load("cpu")
    lo, hi = grader.card["training_data"]["seeds"]
    seeds = list(range(args.seed, args.seed + args.studies))
    if any(lo <= s <= hi for s in seeds):
        raise ValueError(f"test seeds {seeds[0]}..{seeds[-1]} overlap training ({lo}..{hi})")
    tallies = {"synthetic_validation": validation_tally(grader)}
    work = args.work or Path(tempfile.mkdtemp(prefix="grader-ood-"))
    test, noise = Tally(), Tally()
    rng = np.random.default_rng(args.seed)
    for i, seed in enumerate(seeds):
        study = work / f"study_{seed}"
        if not (study / "truth.json").exists():
            generate_study(study, seed)
        anatomy, _ = load_synthetic(study)
        test.add_predictions(grader.predict(anatomy))
        if i < args.noise_studies:
            noise.add_predictions(grader.predict(noisy(anatomy, rng)))
    tallies["synthetic_test"] = test
    real = Tally()
    grades = {"flagged": [0, 0, 0], "passed": [0, 0, 0]}
    patients = real_anatomies()
    for _, anatomy in patients:
        pred = grader.predict(anatomy)
        real.add_predictions(pred)
        for out in pred.values():
            entry = out[(CANAL, None)]
            if entry.get("probabilities"):
                key = "flagged" if entry["ood"]["flagged"] else "passed"
                grades[key][int(np.argmax(entry["probabilities"]))] += 1
    tallies["real_spider_t2space"] = real
    tallies[f"noise_{args.noise_studies}_studies"] = noise
    rates = {name: t.summary() for name, t in tallies.items()}
    print(f"out-of-distribution gate of grader {grader.card['version']} (threshold 1.0 = "
          f"{grader.card['ood']['percentile']:g}th percentile of synthetic validation crops)")
    print(f"{'input':<28} {'group':<13} {'flagged':>8} {'crops':>6} {'rate':>7} {'median':>7}")
    for name, groups in rates.items():
        for group, r in groups.items():
            if r["crops"]:
                print(f"{name:<28} {group:<13} {r['flagged']:>8} {r['crops']:>6} "
                      f"{r['rate']:>7.1%} {r['median_score']:>7.2f}")
    print(f"\nlearned canal grades on {len(patients)} real patients' levels "
          f"({', '.join(GRADES)}): flagged {grades['flagged']}, passed {grades['passed']}")
    print(f"{time.perf_counter() - t0:.0f} s")
    if args.write_card:
        block = {**rates, "real_canal_grades_learned": {
            "grades": list(GRADES), **grades, "patients": len(patients)},
            "test_seeds": [seeds[0], seeds[-1]],
            "command": COMMAND.format(studies=args.studies, seed=args.seed)}
        path = registry.update_card("grader", ("ood", "flag_rates"), block)
        print(f"wrote ood.flag_rates into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
