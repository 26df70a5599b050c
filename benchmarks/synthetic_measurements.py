"""Level labelling and measurements on synthetic studies against the generator's geometry.

Synthetic studies are the one place where every length is known exactly, including at
compressed levels, which the real data hardly contains. Each study is measured twice with
the node's own code: on the generator's reference masks (geometry error alone) and on the
shipped segmentation's masks (what the node reports). Severe canal levels are listed apart:
a compressed canal must measure compressed.

    .venv/bin/python benchmarks/synthetic_measurements.py --studies 10 --seed 910000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from lumbar_common.vocabulary import CANAL, rsna_key
from models.levels import label_levels, semantic_from_labels
from models.measurements import measure_levels
from models.volume import load_volume

PAIRS = (("canal_ap_diameter", "canal_ap_mm"), ("disc_height_anterior", "disc_height_anterior_mm"),
         ("disc_height_posterior", "disc_height_posterior_mm"))


def reference_semantic(study: Path, volume: object) -> np.ndarray:
    """The generator's labels on the volume's slices (matched by SOP instance UID)."""
    truth = json.loads((study / "truth.json").read_text())
    rec = next(r for r in truth["series"].values()
               if r["series_instance_uid"] == volume.series_instance_uid)  # type: ignore[attr-defined]
    with np.load(study / rec["label_file"]) as npz:
        labels, uids = npz["labels"], [str(u) for u in npz["sop_instance_uids"]]
    index = {u: i for i, u in enumerate(uids)}
    return semantic_from_labels(labels[[index[u] for u in volume.sop_instance_uids]])  # type: ignore[attr-defined]


def measure(study: Path, segmenter: object) -> list[dict]:
    truth = json.loads((study / "truth.json").read_text())
    files = [study / f for f in truth["series"]["sag_t2" if "sag_t2" in truth["series"]
                                                  else "sag_stir"]["files"]]
    volume = load_volume(files, role="sag_t2")
    rows = []
    for source, semantic in (("reference", reference_semantic(study, volume)),
                             ("segmentation", segmenter.segment(volume))):  # type: ignore[attr-defined]
        labelling = label_levels(volume, semantic)
        measured, _ = measure_levels(volume, semantic, labelling)
        named = {g.level for g in labelling.levels}
        for level, t in truth["levels"].items():
            values = {m["name"]: m["value"] for m in measured.get(level, [])}
            row = {"study": study.name, "source": source, "level": level,
                   "named": level in named,
                   "canal_grade": t["grades"]["spinal_canal_stenosis"]}
            for name, key in PAIRS:
                if name in values and key in t:
                    row[name] = values[name] - t[key]
            rows.append(row)
    return rows


def _stats(errors: list[float]) -> str:
    if not errors:
        return "-"
    e = np.abs(errors)
    return f"{e.mean():.2f} / {np.percentile(e, 95):.2f} / {np.mean(e <= 1.0):.0%} (n={len(e)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--seed", type=int, default=910000)
    parser.add_argument("--severe", type=int, default=4,
                        help="extra studies generated with a severe canal at L4-L5")
    args = parser.parse_args(argv)
    from models.pipeline import load_segmenter
    from models.synth import generate_study

    segmenter = load_segmenter("cpu")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = [(args.seed + i, None) for i in range(args.studies)]
        severe = {rsna_key(CANAL, None, "L4-L5"): "Severe"}
        plan += [(args.seed + 500 + i, severe) for i in range(args.severe)]
        for seed, grades in plan:
            study = Path(tmp) / f"seed_{seed}"
            generate_study(study, seed=seed, **({"grades": grades} if grades else {}))
            rows += measure(study, segmenter)
    print(f"{args.studies} synthetic studies (seeds {args.seed}..) + {args.severe} with a severe "
          "L4-L5 canal; |error| mean / p95 / within 1 mm")
    for source in ("reference", "segmentation"):
        sel = [r for r in rows if r["source"] == source]
        print(f"{source} masks: levels named {sum(r['named'] for r in sel)}/{len(sel)}")
        for name, _ in PAIRS:
            print(f"  {name:24s} {_stats([r[name] for r in sel if name in r])}")
        severe = [r for r in sel if r["canal_grade"] == "Severe" and "canal_ap_diameter" in r]
        signed = [r["canal_ap_diameter"] for r in severe]
        print(f"  canal AP at severe levels: {_stats(signed)}; mean signed error "
              f"{np.mean(signed) if signed else float('nan'):+.2f} mm")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
