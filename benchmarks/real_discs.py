"""Disc height and listhesis measured by the node against the expert's per-disc gradings.

Every mid-sagittal T1/T2 slice of ``spider-midsag`` goes through the node's own
segmentation, level labelling and measurement code (the single slice is the mid-sagittal
slice the pipeline measures on). Per disc the measured disc height, normalised by the
patient's own vertebral body height so that body size and pixel-spacing estimates cancel,
is compared with the expert's "Disc narrowing"; the measured slip with "Spondylolisthesis".

Two figures per finding: the raw measurement's AUC (nothing fitted), and the AUC of a
small logistic model (normalised heights + level) under patient-level 5-fold
cross-validation: folds by patient, never by disc or image, the model fitted on four folds
and scored on the fifth. These are development figures on the shared patients. The canal
rule's ratio (thresholds.toml) was chosen on this run, which leaves out the segmentation's
real test patients, so the test figures of benchmarks/real_validation.py stay untouched.

    .venv/bin/python benchmarks/real_discs.py [--sequence t2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lumbar_common.vocabulary import GRADES, LEVELS
from models.grading.measurement_grader import MeasurementGrader
from models.levels import label_levels
from models.measurements import measure_levels
from models.realdata.midsag import midsag_volume
from models.realdata.spider import load_gradings, midsag_images

FOLDS = 5
SEED = 20241


def measure_image(segmenter: object, path: Path, row_mm: float, col_mm: float,
                  key: str, thickness_mm: float) -> dict[str, dict[str, float]]:
    from PIL import Image

    image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    volume = midsag_volume(image, row_mm, col_mm, key, thickness_mm)
    semantic = segmenter.segment(volume)  # type: ignore[attr-defined]
    labelling = label_levels(volume, semantic)
    measurements, _ = measure_levels(volume, semantic, labelling)
    return {lv: {m["name"]: float(m["value"]) for m in ms} for lv, ms in measurements.items()}


def features(per_level: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per disc: height over the mean body height of this patient, and slip over it."""
    bodies = [m["vertebral_body_height"] for m in per_level.values()
              if "vertebral_body_height" in m]
    scale = float(np.median(bodies)) if bodies else float("nan")
    heights = [m["disc_height_mean"] for m in per_level.values() if "disc_height_mean" in m]
    canals = [m["canal_ap_diameter"] for m in per_level.values() if "canal_ap_diameter" in m]
    own = float(np.median(heights)) if heights else float("nan")
    out = {}
    for level, m in per_level.items():
        row = {}
        if "disc_height_mean" in m:
            row["relative_height"] = m["disc_height_mean"] / own
        for name in ("disc_height_mean", "disc_height_anterior", "disc_height_posterior"):
            if name in m:
                row[name] = m[name] / scale
        if "listhesis" in m:
            row["slip"] = abs(m["listhesis"]) / scale
            row["slip_signed"] = m["listhesis"] / scale
        if "canal_ap_diameter" in m:
            row["canal_ap_mm"] = m["canal_ap_diameter"]
            if len(canals) >= 3:  # the grader's own rule (thresholds.toml, relative)
                row["canal_ratio"] = m["canal_ap_diameter"] / float(np.median(canals))
        out[level] = row
    return out


def canal_grade(grader: MeasurementGrader, ap_mm: float, ratio: float | None) -> str:
    """The measurement grader's canal grade (its own thresholds and relative rule)."""
    return GRADES[int(np.argmax(grader.canal_probabilities(ap_mm, ratio)))]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count one half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _design(rows: list[dict], names: list[str]) -> np.ndarray:
    cols = [[r[n] for n in names] for r in rows]
    onehot = [[1.0 if r["level"] == lv else 0.0 for lv in LEVELS] for r in rows]
    return np.hstack([np.array(cols), np.array(onehot)])


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """Class-balanced, L2-regularised logistic regression (weights, bias last)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    w_pos = 0.5 / max(y.mean(), 1e-9)
    w_neg = 0.5 / max(1 - y.mean(), 1e-9)
    weights = np.where(y == 1, w_pos, w_neg)
    xb = np.hstack([x, np.ones((len(x), 1))])

    def loss(beta: np.ndarray) -> tuple[float, np.ndarray]:
        p = np.clip(expit(xb @ beta), 1e-12, 1 - 1e-12)
        nll = -np.sum(weights * (y * np.log(p) + (1 - y) * np.log(1 - p)))
        grad = xb.T @ (weights * (p - y))
        reg = 0.5 * l2 * np.sum(beta[:-1] ** 2)
        return float(nll + reg), grad + l2 * np.r_[beta[:-1], 0.0]

    return minimize(loss, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B").x


def cv_auc(rows: list[dict], names: list[str], target: str) -> tuple[float, list[float]]:
    """Pooled out-of-fold AUC and per-fold AUCs of a logistic model, folds by patient."""
    patients = sorted({r["patient"] for r in rows})
    order = np.random.default_rng(SEED).permutation(len(patients))
    fold_of = {patients[i]: k % FOLDS for k, i in enumerate(order)}
    x = _design(rows, names)
    y = np.array([r[target] for r in rows], dtype=int)
    out = np.zeros(len(rows))
    per_fold = []
    for k in range(FOLDS):
        test = np.array([fold_of[r["patient"]] == k for r in rows])
        mu, sd = x[~test].mean(0), x[~test].std(0) + 1e-9
        beta = fit_logistic((x[~test] - mu) / sd, y[~test])
        out[test] = ((x[test] - mu) / sd) @ beta[:-1] + beta[-1]
        per_fold.append(auc(out[test], y[test]))
    return auc(out, y), per_fold


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", choices=("t1", "t2", "both"), default="t2")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--include-test", action="store_true",
                        help="also use the segmentation's real test patients (by default they "
                             "are left out, so choices made here never see them)")
    args = parser.parse_args(argv)
    from models.registry import load_card

    test_patients = set() if args.include_test else set(load_card("segmentation")["split"]["test"])
    from models.pipeline import load_segmenter

    segmenter = load_segmenter("cpu")
    gradings = load_gradings()
    rows: list[dict] = []
    images = [m for m in midsag_images() if args.sequence in ("both", m.sequence)
              and m.patient not in test_patients]
    measured_levels = graded_levels = 0
    for img in images:
        per_level = measure_image(segmenter, img.path, img.row_mm, img.col_mm,
                                  f"{img.patient}_{img.sequence}", img.slice_thickness_mm)
        for level, feats in features(per_level).items():
            g = gradings.get((img.patient, level))
            if level not in LEVELS or g is None:
                continue
            graded_levels += 1
            if not np.isfinite(feats.get("disc_height_mean", float("nan"))):
                continue
            measured_levels += 1
            rows.append({"patient": img.patient, "sequence": img.sequence, "level": level,
                         "narrowing": int(g.narrowing), "listhesis": int(g.listhesis),
                         "pfirrmann": g.pfirrmann, "healthy": g.healthy, **feats,
                         "slip": feats.get("slip", float("nan"))})
    y_n = np.array([r["narrowing"] for r in rows])
    h = np.array([r["disc_height_mean"] for r in rows])
    raw_narrow = auc(-h, y_n)
    narrow_feats = ["disc_height_mean", "relative_height"]
    rows = [r for r in rows if all(np.isfinite(r.get(k, np.nan)) for k in narrow_feats)]
    y_n = np.array([r["narrowing"] for r in rows])
    h = np.array([r["disc_height_mean"] for r in rows])
    raw_narrow = auc(-h, y_n)
    cv_narrow, folds_n = cv_auc(rows, narrow_feats, "narrowing")
    slip_rows = [r for r in rows if np.isfinite(r["slip"]) and np.isfinite(
        r.get("slip_signed", np.nan))]
    y_l = np.array([r["listhesis"] for r in slip_rows])
    raw_slip = auc(np.array([r["slip"] for r in slip_rows]), y_l)
    cv_slip, folds_l = cv_auc(slip_rows, ["slip", "slip_signed"], "listhesis")
    patients = len({r["patient"] for r in rows})
    healthy = [r for r in rows if r["healthy"] and "canal_ap_mm" in r]
    grader = MeasurementGrader()
    normal = sum(canal_grade(grader, r["canal_ap_mm"], r.get("canal_ratio")) == "Normal/Mild"
                 for r in healthy)
    others = [r for r in rows if not r["healthy"] and "canal_ap_mm" in r]
    narrowed = sum(canal_grade(grader, r["canal_ap_mm"], r.get("canal_ratio")) != "Normal/Mild"
                   for r in others)
    summary = {
        "healthy_canal_normal_mild": normal, "healthy_with_canal": len(healthy),
        "other_canal_narrowed": narrowed, "other_with_canal": len(others),
        "images": len(images), "patients": patients, "graded_lumbar_discs_seen": graded_levels,
        "discs_measured": measured_levels,
        "narrowing": {"positives": int(y_n.sum()), "n": len(rows), "auc_raw": raw_narrow,
                      "auc_cv": cv_narrow, "auc_cv_folds": folds_n},
        "listhesis": {"positives": int(y_l.sum()), "n": len(slip_rows), "auc_raw": raw_slip,
                      "auc_cv": cv_slip, "auc_cv_folds": folds_l},
    }
    print(f"spider-midsag {args.sequence}: {len(images)} images, {patients} patients, "
          f"{measured_levels}/{graded_levels} graded lumbar discs measured")
    print(f"expert-healthy discs whose canal AP grades Normal/Mild: {normal}/{len(healthy)}"
          f" ({normal / max(len(healthy), 1):.1%}); other discs graded Moderate or worse: "
          f"{narrowed}/{len(others)}")
    for key in ("narrowing", "listhesis"):
        s = summary[key]
        folds = ", ".join(f"{v:.2f}" for v in s["auc_cv_folds"])
        print(f"{key:10s} positives {s['positives']:3d}/{s['n']:4d}  AUC raw measurement "
              f"{s['auc_raw']:.3f}  AUC 5-fold by patient {s['auc_cv']:.3f} (folds {folds})")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
