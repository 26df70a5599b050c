"""The node's whole pipeline on real patients' MRI, against truth masks and an expert.

Each SPIDER T2-SPACE patient the segmentation never trained on is written as a DICOM study
(sagittal T2 only) and analysed exactly as a PACS-sent study would be. Beside it the same
measurement code runs on the patient's truth masks, so measurement errors separate
segmentation error from geometry error. Grades are compared with the expert's per-disc
gradings (SPIDER): a disc graded healthy (Pfirrmann <= 2, no bulge, herniation, narrowing
or slip) must not be called stenotic.

Validation patients (segmentation card split ``val``) may be looked at as often as needed
to choose thresholds; ``--split test`` is for the one final figure.

    .venv/bin/python benchmarks/real_validation.py --split val
    .venv/bin/python benchmarks/real_validation.py --split test --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from models.levels import label_levels
from models.measurements import measure_levels
from models.plausibility import RANGES
from models.realdata.spider import load_gradings, load_t2space
from models.realdata.wrap import SeriesSpec, write_sagittal_series
from models.volume import load_volume

MEASURES = ("canal_ap_diameter", "disc_height_anterior", "disc_height_posterior",
            "disc_height_mean", "vertebral_body_height", "listhesis")
GRADES = ("Normal/Mild", "Moderate", "Severe")


def split_patients(split: str) -> list[str]:
    from models.registry import load_card

    card_split = load_card("segmentation")["split"]
    if split == "all":
        return [*card_split["val"], *card_split["test"]]
    return list(card_split[split])


def _values(measurements: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    return {lv: {m["name"]: float(m["value"]) for m in ms if m.get("value") is not None}
            for lv, ms in measurements.items()}


def analyse_patient(patient: str, work: Path, segmenter: object) -> dict:
    """Pipeline findings on the wrapped study, and truth-mask measurements beside them."""
    from models.pipeline import analyze_study

    data = load_t2space(patient)
    dicom = work / patient / "dicom"
    files = write_sagittal_series(dicom, patient, data.images, data.pixel_mm, data.slice_mm,
                                  SeriesSpec("t2_spc_sag", 1500.0, 120.0))
    doc = analyze_study(files, work / patient / "out", device="cpu",
                        segmenter=segmenter)  # type: ignore[arg-type]
    volume = load_volume(files, role="sag_t2")
    # the volume may order slices differently from the files: match them by pixels
    order = [int(np.argmin([np.abs(volume.array[i].astype(float) - im).sum()
                            for im in data.images])) for i in range(len(volume.array))]
    truth = data.labels[order]
    labelling = label_levels(volume, truth)
    truth_meas, _ = measure_levels(volume, truth, labelling)
    truth_centres = {g.level: g.disc_centre_lps for g in labelling.levels}
    return {"patient": patient, "doc": doc, "truth": _values(truth_meas),
            "truth_centres": {k: v.tolist() for k, v in truth_centres.items()}}


def level_rows(result: dict, gradings: dict) -> list[dict]:
    doc = result["doc"]
    rows = []
    pred_levels = {lv["level"]: lv for lv in doc.get("levels", [])}
    for lv_name, lv in pred_levels.items():
        finding = next((f for f in doc["findings"] if f["level"] == lv_name
                        and f["condition"] == "spinal_canal_stenosis"), None)
        centre = result["truth_centres"].get(lv_name)
        same = centre is not None and float(np.linalg.norm(
            np.subtract(lv["disc_centre_lps"], centre))) < 8.0
        second = (finding or {}).get("second_opinion") or {}
        rows.append({
            "patient": result["patient"], "level": lv_name, "labelling_agrees": same,
            "pred": {m["name"]: float(m["value"]) for m in lv["measurements"]},
            "truth": result["truth"].get(lv_name, {}) if same else {},
            "withheld": [w for w in lv["warnings"] if "withheld" in w],
            "canal_grade": (finding or {}).get("grade"),
            "canal_grader": (finding or {}).get("grader"),
            "learned_grade": second.get("grade") if second.get("grader") == "learned" else None,
            "expert": gradings.get((result["patient"], lv_name)),
            "level_ood": ((doc.get("ood") or {}).get("levels") or {}).get(lv_name, {}),
        })
    return rows


def summarise(rows: list[dict], docs: list[dict]) -> dict:
    out: dict = {"patients": len(docs), "levels": len(rows)}
    healthy = [r for r in rows if r["expert"] is not None and r["expert"].healthy]
    called = [r for r in healthy if r["canal_grade"] is not None]
    out["healthy_discs"] = len(healthy)
    out["healthy_normal_mild"] = sum(r["canal_grade"] == "Normal/Mild" for r in called)
    out["healthy_graded"] = len(called)
    graded = [r for r in rows if r["canal_grade"] is not None]
    out["canal_grades"] = {g: sum(r["canal_grade"] == g for r in graded) for g in GRADES}
    out["impossible"] = sum(1 for r in rows for k, v in r["pred"].items()
                            if k in RANGES and not RANGES[k][0] <= v <= RANGES[k][1])
    out["withheld"] = sum(len(r["withheld"]) for r in rows)
    out["labelling_agrees"] = sum(r["labelling_agrees"] for r in rows)
    errors: dict = {}
    for name in MEASURES:
        diffs = [abs(r["pred"][name] - r["truth"][name]) for r in rows
                 if name in r["pred"] and name in r["truth"]]
        errors[name] = {"n": len(diffs), "mean_abs": float(np.mean(diffs)) if diffs else None,
                        "p95_abs": float(np.percentile(diffs, 95)) if diffs else None}
    out["measurement_error"] = errors
    both = [r for r in rows if r["canal_grade"] and r["learned_grade"]]
    out["grader_agreement"] = {
        "both_graded": len(both),
        "agree": sum(r["canal_grade"] == r["learned_grade"] for r in both),
        "learned_withdrawn": sum(1 for r in rows if r["canal_grade"] and not r["learned_grade"]),
    }
    seg = [((d.get("ood") or {}).get("segmentation") or {}).get("flagged") for d in docs]
    lvl = [bool(r["level_ood"].get("flagged")) for r in rows if r["level_ood"]]
    out["ood"] = {"study_flagged": sum(bool(s) for s in seg), "studies": len(seg),
                  "level_flagged": sum(lvl), "levels_checked": len(lvl)}
    return out


def print_summary(s: dict, split: str) -> None:
    print(f"real SPIDER patients ({split}): {s['patients']}, levels found: {s['levels']}, "
          f"labelled as on the truth masks: {s['labelling_agrees']}")
    print(f"canal grades: {s['canal_grades']}")
    print(f"expert-healthy discs called Normal/Mild: {s['healthy_normal_mild']}/"
          f"{s['healthy_graded']} graded ({s['healthy_discs']} healthy discs)")
    print(f"impossible values reported: {s['impossible']}, withheld: {s['withheld']}")
    print(f"{'measurement':24s} {'n':>4s} {'mean |err|':>10s} {'p95 |err|':>10s}"
          "  (mm, vs truth masks)")
    for name, e in s["measurement_error"].items():
        if e["n"]:
            print(f"{name:24s} {e['n']:4d} {e['mean_abs']:10.2f} {e['p95_abs']:10.2f}")
    ga = s["grader_agreement"]
    print(f"canal grade, measurement vs learned grader: {ga['agree']}/{ga['both_graded']} agree; "
          f"learned withdrawn at {ga['learned_withdrawn']} levels")
    o = s["ood"]
    print(f"segmentation OOD: {o['study_flagged']}/{o['studies']} studies, "
          f"{o['level_flagged']}/{o['levels_checked']} levels flagged")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("val", "test", "all"), default="val")
    parser.add_argument("--patients", nargs="*", help="override the split's patients")
    parser.add_argument("--json", type=Path, help="write rows and summary here")
    parser.add_argument("--keep", type=Path, help="keep the wrapped studies and results here")
    args = parser.parse_args(argv)
    from models.pipeline import load_segmenter

    patients = args.patients or split_patients(args.split)
    gradings = load_gradings()
    segmenter = load_segmenter("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        results = [analyse_patient(p, work, segmenter) for p in patients]
    rows = [r for res in results for r in level_rows(res, gradings)]
    summary = summarise(rows, [res["doc"] for res in results])
    print_summary(summary, args.split)
    if args.json:
        for r in rows:
            r["expert"] = r["expert"].__dict__ if r["expert"] is not None else None
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
