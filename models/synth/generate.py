"""One synthetic study end to end: patient, series, faults, labels, truth, preview.

Independent random streams per purpose (grades, anatomy, protocol, rendering, faults) keep a
seed's patient the same when only, say, the grades or the variants change.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .anatomy import Anatomy, build_anatomy
from .bones import bone_structures
from .contrast import NoiseField
from .dicomio import study_info, timing
from .pathology import draw_grades
from .series import SeriesPlan, axial_plan, mark_partial, render, sagittal_plan, to_uint16
from .series import volume_affine as _affine
from .soft import soft_structures
from .tissues import Structure
from .truth import build_truth
from .variants import check_variants, write_brain_study, write_localizer
from .writer import (
    SeriesRecord,
    add_duplicate_instance,
    add_duplicate_position,
    corrupt_file,
    write_series,
)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def structures_for(anatomy: Anatomy) -> list[Structure]:
    return (soft_structures(anatomy, "under") + bone_structures(anatomy)
            + soft_structures(anatomy, "over"))


def generate_study(
    out_dir: Path,
    seed: int,
    *,
    stir: bool = False,
    grades: dict[str, str] | None = None,
    variants: Sequence[str] = (),
    preview: bool = False,
    axial: str | None = None,
    matrix: int | None = None,
) -> dict[str, Any]:
    """Write a study under ``out_dir`` (see docs/architecture.md) and return its truth.

    ``matrix`` shrinks the images (same field of view, larger pixels) for fast tests; the
    patient and everything in truth.json stay those of the seed.
    """
    if matrix is not None and not 64 <= int(matrix) <= 1024:
        raise ValueError(f"matrix must be 64..1024 pixels, got {matrix!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    if axial not in (None, "stack", "per-level"):
        raise ValueError(f"axial must be 'stack' or 'per-level', got {axial!r}")
    var = check_variants(list(variants))
    if stir and "stir" not in var:
        var.append("stir")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("dicom", "labels"):  # a rerun into the same folder leaves no old files
        shutil.rmtree(out_dir / stale, ignore_errors=True)
    for stale_file in ("preview.png", "truth.json"):  # truth.json last written: study complete
        (out_dir / stale_file).unlink(missing_ok=True)
    vrng = _rng(seed, 18)
    if "non_lumbar" in var:
        info = study_info(seed, _rng(seed, 13), body_part="BRAIN")
        records = write_brain_study(out_dir, info, _rng(seed, 16))
        truth = build_truth(seed=seed, info=info, anatomy=None, records=records, variants=var,
                            corrupt_files=[], partial=[], extra={})
        (out_dir / "truth.json").write_text(json.dumps(truth, indent=1))
        return truth

    grade_map = draw_grades(_rng(seed, 11), grades)
    anatomy = build_anatomy(_rng(seed, 12), grade_map, transitional="transitional" in var)
    structures = structures_for(anatomy)
    info = study_info(seed, _rng(seed, 13))
    prng = _rng(seed, 14)
    sag_main = "sag_stir" if "stir" in var else "sag_t2"
    sag = sagittal_plan(anatomy, prng, sag_main, "STIR" if "stir" in var else "T2", matrix)
    drawn_mode = "per-level" if prng.random() < 0.6 else "stack"
    ax_mode = axial or drawn_mode
    ax = axial_plan(anatomy, prng, ax_mode, int(matrix * 0.75) if matrix else None)
    noise = NoiseField(_rng(seed, 19), anatomy.vertebra("L3").centre)
    tims = {w: timing(w, info.field_strength, _rng(seed, 20 + i))
            for i, w in enumerate(("T1", "T2", "STIR"))}
    base_no = 100 if info.vendor.key == "philips" else 1
    step = 100 if info.vendor.key == "philips" else 1

    wanted = [] if "missing_sag_t1" in var else ["T1"]
    wanted.append(sag.weighting)
    sag_images, sag_labels = render(anatomy, structures, sag.slices, wanted, noise,
                                    _rng(seed, 15))
    partial = mark_partial(anatomy, sag_labels, sag.slices)
    shuffle = "out_of_order" in var
    records: list[SeriesRecord] = []
    pixels: dict[str, np.ndarray] = {}
    if "localizer" in var:
        records.append(write_localizer(out_dir, anatomy, structures, info, noise,
                                       _rng(seed, 17)))
    for number, (key, weighting) in enumerate((("sag_t1", "T1"), (sag_main, sag.weighting)), 1):
        if weighting not in sag_images:
            continue
        pixels[key] = to_uint16(sag_images[weighting], _rng(seed, 30 + number))
        rec = write_series(out_dir, key, key, info, sag.slices, pixels[key],
                           series_number=base_no + number * step,
                           spacing_between=sag.spacing_between, tim=tims[weighting],
                           rng=_rng(seed, 40 + number), shuffle=shuffle)
        rec.extra["weighting"] = weighting
        rec.extra["label_file"] = f"labels/{key}.npz"
        _save_labels(out_dir, rec, sag, sag_labels)
        records.append(rec)
    ax_labels = None
    if "missing_ax_t2" not in var:
        ax_images, ax_labels = render(anatomy, structures, ax.slices, ["T2"], noise,
                                      _rng(seed, 16), subsamples=3 if ax_mode != "stack" else 2)
        pixels["ax_t2"] = to_uint16(ax_images["T2"], _rng(seed, 33))
        rec = write_series(out_dir, "ax_t2", "ax_t2", info, ax.slices, pixels["ax_t2"],
                           series_number=base_no + 3 * step, spacing_between=ax.spacing_between,
                           tim=tims["T2"], rng=_rng(seed, 43), shuffle=shuffle)
        rec.extra.update(weighting="T2", axial_mode=ax_mode, slice_levels=ax.slice_levels)
        records.append(rec)

    extra: dict[str, Any] = {"axial_mode": ax_mode if "missing_ax_t2" not in var else None}
    main = next(r for r in records if r.key == sag_main)
    if "duplicate_instances" in var:
        extra["duplicate_files"] = [add_duplicate_instance(out_dir, main, vrng)]
    if "duplicate_position" in var:
        extra["duplicate_position"] = add_duplicate_position(out_dir, main, info,
                                                             pixels[sag_main], vrng)
    corrupt: list[str] = []
    if "corrupt" in var:
        corrupt.append(corrupt_file(out_dir, _pick_for_corruption(main, extra), vrng))
    truth = build_truth(seed=seed, info=info, anatomy=anatomy, records=records, variants=var,
                        corrupt_files=corrupt, partial=partial, extra=extra)
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=1))
    if preview:
        from .preview import write_preview

        write_preview(out_dir / "preview.png", sag_images, sag_labels, ax, ax_images
                      if ax_labels is not None else None, ax_labels)
    return truth


def _pick_for_corruption(rec: SeriesRecord, extra: dict[str, Any]) -> SeriesRecord:
    """A view of the series without files already used by other faults."""
    used = {f for pair in extra.get("duplicate_files", []) for f in pair}
    used |= set(extra.get("duplicate_position", {}).get("files", []))
    view = SeriesRecord(rec.key, rec.role, rec.series_instance_uid, rec.series_number,
                        rec.description, [f for f in rec.files if f not in used])
    return view


def _save_labels(out_dir: Path, rec: SeriesRecord, plan: SeriesPlan, labels: np.ndarray) -> None:
    path = out_dir / "labels" / f"{rec.key}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, labels=labels.astype(np.uint16),
                        affine=_affine(plan.slices, plan.spacing_between),
                        sop_instance_uids=np.array(rec.sop_instance_uids, dtype=str))
