"""Segmentation benchmark: held-out Dice beside the nnU-Net reference, and time per study.

    .venv/bin/python benchmarks/segmentation.py [--device auto] [--synthetic-dir DIR]

Real Dice is computed per held-out SPIDER patient (the card's test split) over all its slices
and averaged; synthetic Dice per held-out synthetic series (seeds never used in training).
Timing segments the sagittal T2 of each held-out synthetic study, as the pipeline does; when
``models.pipeline.analyze_study`` exists its per-stage ``timings_s`` are shown too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

REFERENCE = {"vertebra": 0.92, "disc": 0.86, "canal": 0.92}


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths, strict=True))) for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--synthetic-dir", type=Path, default=Path("/tmp/lumbar-node-synth"))
    args = parser.parse_args(argv)

    import torch

    from models.segmentation import data as seg_data
    from models.segmentation.evaluate import evaluate_sets, mean_dice
    from models.segmentation.infer import Segmenter
    from models.segmentation.train import SYNTHETIC_TEST_SEEDS

    seg = Segmenter.load(device=args.device)
    print(f"model {seg.card['name']} {seg.card['version']} sha256 {seg.card['sha256'][:12]} "
          f"on {seg.device} ({torch.get_num_threads()} threads)")
    real_sets = [seg_data.load_spider_patient(p) for p in seg.card["split"]["test"]]
    started = time.perf_counter()
    real = mean_dice(evaluate_sets(seg.net, real_sets, seg.device))
    real_s = time.perf_counter() - started
    n_slices = sum(len(s.images) for s in real_sets)

    synthetic: dict[str, float] | None = None
    study_dirs: list[Path] = []
    if seg_data.synthetic_available():
        study_dirs = seg_data.generate_synthetic(args.synthetic_dir, list(SYNTHETIC_TEST_SEEDS))
        synth_sets = [seg_data.load_synthetic_series(d, k) for d in study_dirs
                      for k in seg_data.synthetic_series_keys(d)]
        synthetic = mean_dice(evaluate_sets(seg.net, synth_sets, seg.device))

    rows = [["class", "real (held-out)", "synthetic", "nnU-Net ref", "real/ref", "synth/ref"]]
    for name, ref in REFERENCE.items():
        syn = synthetic[name] if synthetic else float("nan")
        rows.append([name, f"{real[name]:.3f}", f"{syn:.3f}", f"{ref:.2f}",
                     f"{real[name] / ref:.3f}", f"{syn / ref:.3f}"])
    print(f"\nDice per class ({len(real_sets)} held-out real patients, {n_slices} slices; "
          f"{len(study_dirs)} held-out synthetic studies)")
    print(table(rows))
    print(f"\nreal held-out slices: {1000 * real_s / n_slices:.0f} ms/slice (incl. resampling)")

    if study_dirs:
        from models.volume import load_volume

        times, shapes = [], []
        for study in study_dirs:
            truth = json.loads((study / "truth.json").read_text())
            key = "sag_t2" if "sag_t2" in truth["series"] else "sag_stir"
            corrupt = set(truth.get("corrupt_files", []))
            volume = load_volume([study / f for f in truth["series"][key]["files"]
                                  if f not in corrupt], role=key)
            started = time.perf_counter()
            seg.segment(volume)
            times.append(time.perf_counter() - started)
            shapes.append("x".join(map(str, volume.array.shape)))
        print(f"segmentation per study (sagittal T2 {', '.join(shapes)}): "
              f"{np.mean(times):.2f} s mean, {np.max(times):.2f} s max on {seg.device}")
        _pipeline_timings(study_dirs[0], args.device)
    return 0


def _pipeline_timings(study: Path, device: str) -> None:
    try:
        from models.pipeline import analyze_study
    except ImportError:
        return
    files = sorted(p for p in (study / "dicom").rglob("*.dcm"))
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        findings = analyze_study(files, Path(out), device=device)
        total = time.perf_counter() - started
    timings = findings.get("timings_s", {})
    print(f"\npipeline analyze_study on {study.name}: status {findings.get('status')}, "
          f"{total:.2f} s total")
    print(table([["stage", "seconds"]] + [[k, f"{v:.2f}"] for k, v in timings.items()]))


if __name__ == "__main__":
    raise SystemExit(main())
