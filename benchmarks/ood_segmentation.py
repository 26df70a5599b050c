"""Segmentation out-of-distribution gate: fit its thresholds, measure its flag rates.

    .venv/bin/python benchmarks/ood_segmentation.py [--synthetic-dir DIR] [--no-write]

Fitting uses development data only: the real validation patients of the card's split (all
their SPIDER T2-SPACE slices) and synthetic studies with seeds never used in training
(``FIT_SEEDS``, sagittal T1 and T2). Each threshold (study; level) is the larger of the
99th percentiles of the real and of the synthetic scores, so the many, alike synthetic
series do not set a threshold that flags ordinary real patients.
The flag rates are then measured on:

* real validation patients (in-sample for the threshold),
* real test patients (the card's test split; touched here only to report),
* synthetic studies of other seeds (``REPORT_SEEDS``),
* non-lumbar input generated here: the validation patients and synthetic series turned by
  90 degrees in-plane (orientation tags that lie), a sagittal head phantom, a sagittal knee
  phantom and Rician noise,
* the SPIDER mid-sagittal T1/T2 images (single slices, 3 scanner makes): real lumbar MRI
  from other scanners and sequences, which should mostly pass.

Levels are the disc centres the pipeline's level labelling finds on the predicted labels;
where it finds none (single slices, foreign input), the disc components' centroids, and
with no disc at all 5 points evenly spaced on the central line of the middle slice.
To keep the run to a few minutes on 2 CPUs, synthetic studies are 10 per group at a
224-pixel matrix (same field of view, larger pixels; the network works at 1 mm anyway).
Unless ``--no-write``, the ``ood`` block of models/weights/segmentation.json is rewritten
with everything printed here; the weights and their sha256 are untouched.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segmentation import table  # noqa: E402  (benchmarks/segmentation.py)

from models.segmentation import data as seg_data  # noqa: E402
from models.segmentation import ood  # noqa: E402
from models.segmentation.infer import Segmenter  # noqa: E402
from models.study import Volume  # noqa: E402

CARD = REPO / "models" / "weights" / "segmentation.json"
MIDSAG = Path("/work/shared/realdata/spider-midsag")
FIT_SEEDS = tuple(range(3000, 3010))
REPORT_SEEDS = tuple(range(4000, 4010))
PHANTOM_SEEDS = tuple(range(4))
SYNTH_MATRIX = 224
PERCENTILE = 99.0

Case = tuple[str, Volume]
POPULATIONS = {
    "real_validation": "SPIDER T2-SPACE validation patients, all slices (fit set)",
    "real_test": "SPIDER T2-SPACE test patients of the card's split, all slices",
    "synthetic": f"synthetic studies, seeds {REPORT_SEEDS[0]}-{REPORT_SEEDS[-1]}, sag T1 + T2",
    "rotated_90": "validation patients and synthetic sag T2 turned 90 degrees in-plane",
    "head_phantom": "generated sagittal head phantom (no spine)",
    "knee_phantom": "generated sagittal knee phantom (other anatomy)",
    "noise": "Rician noise",
    "midsag_real": "SPIDER mid-sagittal single slices, T1 and T2, Siemens and Philips",
    "midsag_real_t1": "the T1 images of midsag_real",
    "midsag_real_t2": "the T2 images of midsag_real",
}


def canonical_volume(images: np.ndarray, spacing: tuple[float, float],
                     slice_mm: float = 0.9) -> Volume:
    """Canonical slices (rows head->feet, columns anterior->posterior) as a sagittal Volume."""
    affine = np.eye(4)
    affine[:3, 0] = [-slice_mm, 0.0, 0.0]
    affine[:3, 1] = [0.0, 0.0, -spacing[0]]
    affine[:3, 2] = [0.0, spacing[1], 0.0]
    images = np.ascontiguousarray(images, dtype=np.float32)
    uids = tuple(f"2.25.{i + 1}" for i in range(len(images)))
    return Volume("sag_t2", "2.25.1", images, affine, uids)


def rotated(volume: Volume) -> Volume:
    """The same pixels turned by 90 degrees in-plane under the same geometry tags."""
    images = np.rot90(volume.array, 1, axes=(1, 2))
    return Volume(volume.role, volume.series_instance_uid, np.ascontiguousarray(images),
                  volume.affine, volume.sop_instance_uids)


# --- generated non-lumbar input -----------------------------------------------------------


def _render(tissue: np.ndarray, values: dict[int, float], rng: np.random.Generator) -> np.ndarray:
    """Tissue map -> blurred MR-like magnitude image with Rician noise."""
    image = np.zeros(tissue.shape, np.float32)
    for value, signal in values.items():
        image[tissue == value] = signal
    texture = ndimage.gaussian_filter(rng.normal(0, 1, tissue.shape), 4) * 0.15
    image = ndimage.gaussian_filter(image * (1 + texture), 0.8)
    noise = rng.normal(0, 0.03, (2, *tissue.shape))
    return (np.hypot(image + noise[0], noise[1]) * 1000).astype(np.float32)


def head_phantom(seed: int, slices: int = 12, size: int = 256) -> Volume:
    """Sagittal head: scalp, skull, CSF, cortex, white matter, ventricle, cerebellum, brainstem."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:size, 0:size].astype(np.float32) - size / 2
    a, b = rng.uniform(70, 80), rng.uniform(85, 95)  # half height, half depth (mm)
    out = []
    for k in range(slices):
        shrink = 1 - 0.5 * ((k - slices / 2) / slices) ** 2
        r = np.sqrt((rr / (a * shrink)) ** 2 + (cc / (b * shrink)) ** 2)
        tissue = np.zeros((size, size), np.int8)
        tissue[r < 1.0] = 1
        tissue[r < 0.95] = 2
        tissue[r < 0.9] = 3
        tissue[r < 0.87] = 4
        tissue[r < 0.7 + 0.05 * np.sin(cc / 6) * np.cos(rr / 7)] = 5
        tissue[((rr + 10) / 12) ** 2 + (cc / 30) ** 2 < 1] = 6
        tissue[((rr - 45) / 20) ** 2 + ((cc - 40) / 28) ** 2 < 1] = 4
        tissue[(np.abs(cc - 10) < 9) & (rr > 20)] = 5
        out.append(_render(tissue, {1: 0.55, 2: 0.05, 3: 0.95, 4: 0.62, 5: 0.38, 6: 1.0}, rng))
    return canonical_volume(np.stack(out), (1.0, 1.0), 5.0)


def knee_phantom(seed: int, slices: int = 12, size: int = 256) -> Volume:
    """Sagittal knee: femur with condyle, tibial plateau and shaft, patella, cartilage, fluid."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:size, 0:size].astype(np.float32)
    joint = size / 2 + rng.uniform(-15, 15)
    radius = rng.uniform(26, 34)
    out = []
    for k in range(slices):
        width = 1 - 0.4 * abs(k - slices / 2) / slices
        tissue = np.ones((size, size), np.int8)  # fat
        tissue[(np.abs(cc - 128) < 70 * width)] = 2  # muscle
        condyle = np.hypot(rr - (joint - radius), cc - 128) < radius * width
        femur = condyle | ((rr < joint - radius) & (np.abs(cc - 128) < 16 * width))
        tibia = (rr > joint + 4) & (np.abs(cc - 128) < (38 - 0.1 * (rr - joint)) * width)
        tissue[np.hypot(rr - (joint - radius), cc - 128) < radius * width + 3] = 3  # cartilage
        tissue[(rr > joint - 2) & (rr < joint + 6) & (np.abs(cc - 128) < 40 * width)] = 4
        tissue[femur | tibia] = 5
        tissue[((rr - joint + radius) / 22) ** 2 + ((cc - 128 + radius + 14) / 9) ** 2 < 1] = 5
        out.append(_render(tissue, {1: 0.9, 2: 0.3, 3: 0.6, 4: 0.95, 5: 0.7}, rng))
    return canonical_volume(np.stack(out), (0.8, 0.8), 3.5)


def noise_volume(seed: int, slices: int = 12, size: int = 256) -> Volume:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (2, slices, size, size))
    return canonical_volume(np.hypot(noise[0] + 0.5, noise[1]) * 300, (1.0, 1.0), 4.0)


# --- populations ---------------------------------------------------------------------------


def spider_cases(patients: list[str]) -> Iterator[Case]:
    for patient in patients:
        real = seg_data.load_spider_patient(patient)
        yield f"spider {patient}", canonical_volume(real.images, real.spacing)


def synthetic_cases(root: Path, seeds: tuple[int, ...], keys: tuple[str, ...]) -> Iterator[Case]:
    from models.synth import generate_study
    from models.volume import load_volume

    for seed in seeds:
        study = root / f"seed_{seed:05d}_m{SYNTH_MATRIX}"
        if not (study / "truth.json").exists():
            generate_study(study, seed=seed, matrix=SYNTH_MATRIX)
        truth = json.loads((study / "truth.json").read_text())
        corrupt = set(truth.get("corrupt_files", []))
        for key in keys:
            if key in truth["series"]:
                files = [study / f for f in truth["series"][key]["files"] if f not in corrupt]
                yield f"synthetic {seed}:{key}", load_volume(files, role=key)


def midsag_cases() -> Iterator[Case]:
    from PIL import Image

    with open(MIDSAG / "series.csv") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        path = MIDSAG / "images" / f"{row['pid']}_{row['sequence']}.png"
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        spacing = (float(row["row_spacing_mm"]), float(row["col_spacing_mm"]))
        yield f"midsag {row['pid']}_{row['sequence']}", canonical_volume(image[None], spacing, 3.0)


# --- scoring -------------------------------------------------------------------------------


def level_centres(volume: Volume, labels: np.ndarray) -> list[np.ndarray]:
    """Disc centres as the pipeline finds them, else disc centroids, else 5 points."""
    from models.levels import label_levels

    try:
        found = [lv.disc_centre_lps for lv in label_levels(volume, labels).levels]
    except (ValueError, RuntimeError):
        found = []
    if found:
        return found
    mid = volume.array.shape[0] // 2
    spacing = volume.spacing
    parts, count = ndimage.label(labels[mid] == 2)
    centres = []
    for index in range(1, count + 1):
        pixels = np.argwhere(parts == index)
        if len(pixels) * spacing[1] * spacing[2] >= ood.LEVEL_FLOORS["disc_mm2"]:
            centres.append(volume.index_to_lps(np.array([mid, *pixels.mean(axis=0)])))
    if centres:
        return sorted(centres, key=lambda p: p[2])[:5]  # the five most caudal
    rows, cols = volume.array.shape[1:]
    return [volume.index_to_lps(np.array([mid, r, cols / 2]))
            for r in np.linspace(rows * 0.2, rows * 0.8, 5)]


def score_cases(segmenter: Segmenter, cases: Iterator[Case]) -> list[dict]:
    scored = []
    for name, volume in cases:
        labels, confidence = segmenter.segment_with_confidence(volume)
        levels = [ood.level_score(volume, labels, confidence, c)
                  for c in level_centres(volume, labels)]
        scored.append({"case": name, "study": ood.study_score(volume, labels, confidence),
                       "levels": levels})
    return scored


def fit_thresholds(sources: dict[str, list[dict]]) -> dict[str, float]:
    """Per kind (study, level): the largest of each source's 99th percentile.

    Synthetic series are many and alike, real validation patients few and more varied; a
    pooled percentile would be set by the synthetic ones and flag ordinary real levels.
    """
    out = {}
    for kind in ("study", "level"):
        out[kind] = round(max(
            float(np.percentile([v for s in scored for v in
                                 ([s["study"]] if kind == "study" else s["levels"])],
                                PERCENTILE))
            for scored in sources.values()), 4)
    return out


def rates(scored: list[dict], thresholds: dict[str, float]) -> dict:
    studies = [s["study"] for s in scored]
    levels = [v for s in scored for v in s["levels"]]
    return {
        "studies": len(studies),
        "study_flagged": round(float(np.mean([s > thresholds["study"] for s in studies])), 4),
        "levels": len(levels),
        "level_flagged": round(float(np.mean([v > thresholds["level"] for v in levels])), 4)
        if levels else None,
        "study_score_median": round(float(np.median(studies)), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic-dir", type=Path, default=Path("/tmp/lumbar-node-ood"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scores", type=Path, help="also write every case's scores here")
    parser.add_argument("--no-write", action="store_true", help="leave the model card alone")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    seg = Segmenter.load(device=args.device)
    split = seg.card["split"]
    synth = args.synthetic_dir

    def run(label: str, make: Callable[[], Iterator[Case]]) -> list[dict]:
        t0 = time.perf_counter()
        out = score_cases(seg, make())
        print(f"  scored {label}: {len(out)} cases in {time.perf_counter() - t0:.0f} s",
              flush=True)
        return out

    val = run("real validation", lambda: spider_cases(split["val"]))
    fit_synth = run("synthetic (fit)", lambda: synthetic_cases(
        synth, FIT_SEEDS, ("sag_t1", "sag_t2")))
    fit = val + fit_synth
    thresholds = fit_thresholds({"real": val, "synthetic": fit_synth})
    print(f"thresholds (larger of the real and the synthetic {PERCENTILE:g}th percentile, "
          f"{len(fit)} in-distribution series): {thresholds}", flush=True)

    populations = {
        "real_validation": val,
        "real_test": run("real test", lambda: spider_cases(split["test"])),
        "synthetic": run("synthetic (report)", lambda: synthetic_cases(
            synth, REPORT_SEEDS, ("sag_t1", "sag_t2"))),
        "rotated_90": run("rotated", lambda: (
            (f"rotated {n}", rotated(v)) for n, v in
            [*spider_cases(split["val"]),
             *synthetic_cases(synth, REPORT_SEEDS, ("sag_t2",))])),
        "head_phantom": run("head phantom", lambda: (
            (f"head {s}", head_phantom(s)) for s in PHANTOM_SEEDS)),
        "knee_phantom": run("knee phantom", lambda: (
            (f"knee {s}", knee_phantom(s)) for s in PHANTOM_SEEDS)),
        "noise": run("noise", lambda: ((f"noise {s}", noise_volume(s)) for s in PHANTOM_SEEDS)),
        "midsag_real": run("mid-sagittal", midsag_cases),
    }
    midsag = populations["midsag_real"]
    populations["midsag_real_t1"] = [s for s in midsag if s["case"].endswith("_t1")]
    populations["midsag_real_t2"] = [s for s in midsag if s["case"].endswith("_t2")]
    flag_rates = {name: rates(scored, thresholds) for name, scored in populations.items()}

    rows = [["population", "series", "flagged", "levels", "flagged", "median score"]]
    for name, r in flag_rates.items():
        rows.append([name, str(r["studies"]), f"{r['study_flagged']:.1%}", str(r["levels"]),
                     "-" if r["level_flagged"] is None else f"{r['level_flagged']:.1%}",
                     f"{r['study_score_median']:.3f}"])
    print(f"\nthreshold study {thresholds['study']:.4f}, level {thresholds['level']:.4f}")
    print(table(rows))
    elapsed = time.perf_counter() - started
    print(f"\n{elapsed:.0f} s on {seg.device}")

    if args.scores:
        args.scores.write_text(json.dumps(populations, indent=1))
    if not args.no_write:
        write_card(thresholds, flag_rates, split["val"])
        print(f"wrote the ood block of {CARD.relative_to(REPO)}")
    return 0


def write_card(thresholds: dict[str, float], flag_rates: dict, val: list[str]) -> None:
    card = json.loads(CARD.read_text())
    sha = card["sha256"]
    card["training_data_kind"] = "real+synthetic"
    card["ood"] = {
        "method": ("score = mean (1 - max softmax) over voxels predicted foreground + mean "
                   "anatomical shortfall max(0, 1 - observed/floor): vertebra area, disc count "
                   "and canal area on the 3 midline slices (study); vertebra and disc area in "
                   "a 40 mm cranio-caudal x 60 mm AP box on the 3 slices nearest the disc "
                   "centre (level); flagged when score > threshold (models/segmentation/ood.py)"),
        "threshold": thresholds["study"],
        "thresholds": thresholds,
        "fit_rule": (f"largest of the {PERCENTILE:g}th percentiles of the real validation "
                     "and the synthetic scores, for studies and for levels"),
        "fitted_on": (f"real validation patients {', '.join(val)} (SPIDER T2-SPACE, all "
                      f"slices) + {len(FIT_SEEDS)} synthetic studies, seeds "
                      f"{FIT_SEEDS[0]}-{FIT_SEEDS[-1]}, sagittal T1 and T2 at a "
                      f"{SYNTH_MATRIX}-pixel matrix"),
        "floors": {"study": ood.STUDY_FLOORS, "level": ood.LEVEL_FLOORS},
        "level_box_mm": {**ood.LEVEL_BOX_MM, "slices": ood.LEVEL_SLICES},
        "flag_rates": flag_rates,
        "populations": POPULATIONS,
        "command": "python benchmarks/ood_segmentation.py",
    }
    if card["sha256"] != sha:  # pragma: no cover - nothing above touches it
        raise RuntimeError("sha256 changed")
    CARD.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
