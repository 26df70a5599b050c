"""Result-object benchmark: time and size of SEG (BINARY beside LABELMAP), SR, key image, KOS.

    .venv/bin/python benchmarks/reports.py [--seed 11] [--repeat 3]
    .venv/bin/python benchmarks/reports.py --phantom [--slices 15] [--scale 5]

The study is a generated synthetic study (``models.synth``, sagittal T2 at its typical
matrix, labels from its truth, findings with the truth grades), or with ``--phantom`` the
result-object test phantom (``--scale 5`` gives 480 x 240 pixels). Times are the median of
``--repeat`` builds (CPU, one process); sizes are the written files.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_reports_study import findings_from_truth, make_findings, make_study

from models.reports import build_key_image, build_kos, build_seg, build_sr
from models.reports.equipment import (
    algorithm_from_models,
    contributing_equipment,
    node_algorithm,
)
from models.reports.writer import SourceHeaders, write_results
from models.study import StudyAnatomy, Volume
from models.volume import load_volume


def _timed(build: Callable[[], pydicom.Dataset], repeat: int) -> tuple[float, pydicom.Dataset]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = build()
        times.append(time.perf_counter() - start)
    assert result is not None
    return statistics.median(times), result


def _size(ds: pydicom.Dataset, path: Path) -> int:
    ds.save_as(path, enforce_file_format=True)
    return path.stat().st_size


def _synthetic(root: Path, seed: int) -> tuple[StudyAnatomy, dict[str, Path], dict]:
    from models.synth.generate import generate_study

    truth = generate_study(root / "study", seed)
    series = truth["series"]["sag_t2"]
    volume: Volume = load_volume([root / "study" / f for f in series["files"]], role="sag_t2")
    labels = np.load(root / "study" / series["label_file"])["labels"]
    anatomy = StudyAnatomy(
        study_instance_uid=truth["study_instance_uid"], volumes={"sag_t2": volume}, labels=labels
    )
    files = {
        str(uid): root / "study" / f
        for uid, f in zip(series["sop_instance_uids"], series["files"], strict=True)
    }
    return anatomy, files, findings_from_truth(truth, volume)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom", action="store_true")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--slices", type=int, default=15)
    parser.add_argument("--scale", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.phantom:
            anatomy, files, _ = make_study(root, scale=args.scale, slices=args.slices)
            findings = make_findings(anatomy.volumes["sag_t2"])
        else:
            anatomy, files, findings = _synthetic(root, args.seed)
        volume = anatomy.volumes["sag_t2"]
        models = findings["models"]
        headers = SourceHeaders(files)
        sources = [headers[uid] for uid in volume.sop_instance_uids]
        equipment = contributing_equipment(models, anatomy.study_instance_uid)
        seg_algorithm = algorithm_from_models(models, "segmentation")
        print(
            f"study: {'phantom' if args.phantom else f'synthetic seed {args.seed}'}, "
            f"{volume.array.shape[0]} slices x {volume.array.shape[1]} x "
            f"{volume.array.shape[2]} pixels, 12 segments, 25 findings"
        )
        rows: list[tuple[str, float, int]] = []
        segs = {}
        for name, labelmap in (("SEG BINARY", False), ("SEG LABELMAP", True)):
            seconds, seg = _timed(
                lambda lm=labelmap: build_seg(
                    sources,
                    anatomy.labels,
                    seg_algorithm,
                    series_instance_uid="1.2.3",
                    sop_instance_uid="1.2.3.4",
                    labelmap=lm,
                    contributing_equipment=equipment,
                ),
                args.repeat,
            )
            segs[name] = seg
            rows.append((name, seconds, _size(seg, root / f"{name}.dcm")))
        seconds, sr = _timed(
            lambda: build_sr(
                findings,
                [volume],
                headers,
                segs=[segs["SEG BINARY"]],
                series_instance_uid="1.2.5",
                sop_instance_uid="1.2.5.1",
                contributing_equipment=equipment,
            ),
            args.repeat,
        )
        rows.append(("SR TID 1500", seconds, _size(sr, root / "sr.dcm")))
        mid = volume.array.shape[0] // 2
        seconds, key = _timed(
            lambda: build_key_image(
                headers[volume.sop_instance_uids[mid]],
                volume.array[mid],
                anatomy.labels[mid],
                findings["findings"],
                series_instance_uid="1.2.6",
                sop_instance_uid="1.2.6.1",
                contributing_equipment=equipment,
            ),
            args.repeat,
        )
        rows.append(("key image SC", seconds, _size(key, root / "key.dcm")))
        seconds, kos = _timed(
            lambda: build_kos(
                key, node_algorithm(models), series_instance_uid="1.2.7", sop_instance_uid="1.2.7.1"
            ),
            args.repeat,
        )
        rows.append(("KOS", seconds, _size(kos, root / "ko.dcm")))
        seconds, _ = _timed(
            lambda: write_results(findings, anatomy, files, root / "out"), args.repeat
        )
        rows.append(
            (
                "write_results (all)",
                seconds,
                sum(p.stat().st_size for p in (root / "out").iterdir()),
            )
        )
    print(f"{'object':<22}{'time s':>10}{'size KiB':>12}")
    for name, seconds, size in rows:
        print(f"{name:<22}{seconds:>10.3f}{size / 1024:>12.1f}")
    binary, labelmap = rows[0], rows[1]
    time_ratio, size_ratio = binary[1] / labelmap[1], binary[2] / labelmap[2]
    print(f"BINARY / LABELMAP: time x{time_ratio:.2f}, size x{size_ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
