"""The imaging pipeline: DICOM files in, findings.json and DICOM result objects out.

Stages are small functions with named inputs and outputs run by one loop that times them,
so a slow or failing stage is visible in ``timings_s`` and in the progress bar. A study the
node cannot analyse (no sagittal T2/STIR, not a lumbar spine, unreadable) is a normal
outcome: it yields ``status: "rejected"`` with the reason, never a traceback, because the
worker must record it and move on. A missing pipeline module, on the other hand, is an
installation fault and raises :class:`PipelineError` so it is never mistaken for a finding.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lumbar_common.series_selection import StudySelection, read_headers, select_study
from lumbar_common.vocabulary import LEVELS, finding_keys, rsna_key
from models.levels import LevelLabelling, label_levels
from models.measurements import measure_levels
from models.overlay import render_overlay
from models.study import StudyAnatomy, Volume
from models.volume import assemble_series

SCHEMA = "lumbar-node/findings/1"
#: fewer sagittal slices than this: disc findings only, stenosis Undetermined
MIN_STENOSIS_SLICES = 3
NOTICE = "AI result \u2014 not for diagnosis without review by a radiologist"
STAGES = ("select", "assemble", "segment", "levels", "measure", "grade", "discs", "overlay",
          "results")


class PipelineError(RuntimeError):
    """A pipeline part is missing or broken (not a property of the study)."""


class Rejected(Exception):
    """The study cannot be analysed; the message is the recorded reason."""


class SegmenterLike(Protocol):
    card: dict[str, Any]

    def segment(self, volume: Volume) -> np.ndarray: ...


def _require(module: str, name: str) -> Callable[..., Any]:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise PipelineError(f"pipeline module {module} is not available: {exc}") from exc
    fn = getattr(mod, name, None)
    if fn is None:
        raise PipelineError(f"pipeline module {module} has no {name}()")
    return fn


def load_segmenter(device: str = "auto") -> SegmenterLike:
    """The registered segmentation model (weights verified against its card)."""
    segmenter_cls = _require("models.segmentation.infer", "Segmenter")
    try:
        return segmenter_cls.load(device=device)
    except (KeyError, OSError, ValueError) as exc:
        raise PipelineError(f"segmentation model cannot be loaded: {exc}") from exc


class _Context:
    """Named values passed between stages, with the timing of each stage."""

    def __init__(self, files: list[Path], out_dir: Path, device: str,
                 segmenter: SegmenterLike | None) -> None:
        self.files = files
        self.out_dir = out_dir
        self.device = device
        self.segmenter = segmenter
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.selection: StudySelection | None = None
        self.paths_by_series: dict[str, list[Path]] = {}
        self.source_files: dict[str, Path] = {}
        self.study_uid = ""
        self.anatomy: StudyAnatomy | None = None
        self.semantic: np.ndarray | None = None
        #: per-voxel segmentation confidence, when the segmenter reports one
        self.confidence: np.ndarray | None = None
        #: out-of-distribution verdicts: {"segmentation": {...}, "levels": {level: {...}}}
        self.ood: dict[str, Any] = {}
        self.disc_findings: list[dict] = []
        #: why stenosis grading is skipped on a sagittal series of one or a few slices
        self.few_slices: str | None = None
        self.labelling: LevelLabelling | None = None
        self.level_notes: dict[str, list[str]] = {}
        self.findings: list[dict] = []
        self.models: dict[str, Any] = {}
        self.outputs: dict[str, Path] = {}


def _select(ctx: _Context) -> None:
    headers, warnings = read_headers(ctx.files)
    ctx.warnings += warnings
    for uid, datasets in headers.items():
        for ds in datasets:
            path = Path(str(ds.filename))
            ctx.paths_by_series.setdefault(uid, []).append(path)
            ctx.source_files[str(ds.SOPInstanceUID)] = path
            ctx.study_uid = ctx.study_uid or str(ds.get("StudyInstanceUID", ""))
    if not headers:
        raise Rejected("no readable DICOM files")
    ctx.selection = select_study(headers)
    if ctx.selection.rejected_reason:
        raise Rejected(ctx.selection.rejected_reason)


def _assemble(ctx: _Context) -> None:
    assert ctx.selection is not None
    volumes: dict[str, Volume] = {}
    stacks: list[Volume] = []
    for role, uid in ctx.selection.chosen.items():
        result = assemble_series(ctx.paths_by_series[uid], role)
        ctx.warnings += [f"{role}: {w}" for w in result.warnings]
        if not result.volumes:
            if role == ctx.selection.sagittal_role:
                raise Rejected(f"sagittal {role} series has no readable images")
            continue
        volumes[role] = result.main
        if role == "ax_t2":
            stacks = [v for v in result.volumes if v is not result.main]
    sag = ctx.selection.sagittal_role
    assert sag is not None
    n = volumes[sag].array.shape[0]
    if n < MIN_STENOSIS_SLICES:
        ctx.few_slices = (f"sagittal {sag} series has only {n} slice(s): stenosis grading needs "
                          f"at least {MIN_STENOSIS_SLICES} (foramina and recesses lie off the "
                          "midline)")
        ctx.warnings.append(ctx.few_slices)
    ctx.anatomy = StudyAnatomy(ctx.study_uid, volumes, axial_stacks=stacks, labels_role=sag,
                               warnings=ctx.warnings)


def _segment(ctx: _Context) -> None:
    assert ctx.anatomy is not None
    if ctx.segmenter is None:
        ctx.segmenter = load_segmenter(ctx.device)
    card = ctx.segmenter.card
    ctx.models["segmentation"] = {k: card.get(k) for k in ("name", "version", "sha256")}
    volume = ctx.anatomy.volumes[ctx.anatomy.labels_role]
    with_confidence = getattr(ctx.segmenter, "segment_with_confidence", None)
    if with_confidence is not None:
        semantic, ctx.confidence = with_confidence(volume)
        semantic = np.asarray(semantic)
    else:
        semantic = np.asarray(ctx.segmenter.segment(volume))
    if semantic.shape != volume.array.shape:
        raise PipelineError(f"segmentation shape {semantic.shape} != volume {volume.array.shape}")
    ctx.semantic = semantic.astype(np.uint8)
    if ctx.confidence is not None:
        study_ood = _require("models.segmentation.ood", "study_ood")
        ctx.ood["segmentation"] = study_ood(volume, ctx.semantic, ctx.confidence, card)


def _levels(ctx: _Context) -> None:
    assert ctx.anatomy is not None and ctx.semantic is not None
    volume = ctx.anatomy.volumes[ctx.anatomy.labels_role]
    ctx.labelling = label_levels(volume, ctx.semantic)
    ctx.anatomy.labels = ctx.labelling.labels
    ctx.anatomy.levels = ctx.labelling.levels
    ctx.anatomy.warnings += [f"level labelling: {w}" for w in ctx.labelling.warnings]
    if not ctx.labelling.levels:
        raise Rejected("no disc levels found on the sagittal series: "
                       + "; ".join(ctx.labelling.warnings))


def _measure(ctx: _Context) -> None:
    assert ctx.anatomy is not None and ctx.labelling is not None and ctx.semantic is not None
    volume = ctx.anatomy.volumes[ctx.anatomy.labels_role]
    ctx.anatomy.measurements, ctx.level_notes = measure_levels(volume, ctx.semantic,
                                                               ctx.labelling)
    if ctx.confidence is not None and ctx.segmenter is not None:
        level_ood = _require("models.segmentation.ood", "level_ood")
        ctx.ood["levels"] = {
            geom.level: level_ood(volume, ctx.semantic, ctx.confidence, geom.disc_centre_lps,
                                  ctx.segmenter.card)
            for geom in ctx.labelling.levels}


def _grade(ctx: _Context) -> None:
    assert ctx.anatomy is not None
    if ctx.few_slices:
        undetermined = _require("models.grading.grade", "undetermined_findings")
        ctx.findings = undetermined(ctx.few_slices)
        return
    grade_study = _require("models.grading", "grade_study")
    findings, card = grade_study(ctx.anatomy, ctx.device, ood=ctx.ood)
    keys = {(f["condition"], f.get("side"), f["level"]) for f in findings}
    if len(findings) != 25 or keys != set(finding_keys()):
        raise PipelineError(f"grader returned {len(findings)} findings, not the 25 of a study")
    ctx.findings = findings
    ctx.models.update(card)


def _discs(ctx: _Context) -> None:
    """Per-disc findings from the disc grader (trained on real expert gradings)."""
    assert ctx.anatomy is not None and ctx.labelling is not None and ctx.semantic is not None
    grader_cls = _require("models.discs.infer", "DiscGrader")
    withdraw = _require("models.discs.infer", "withdraw_out_of_distribution")
    try:
        grader = grader_cls.load(device=ctx.device)
    except (KeyError, OSError, ValueError) as exc:
        raise PipelineError(f"disc grader cannot be loaded: {exc}") from exc
    ctx.models["disc_grader"] = {k: grader.card.get(k) for k in ("name", "version", "sha256")}
    t1 = ctx.anatomy.volumes.get("sag_t1")
    t1_labelling = None
    if t1 is not None and ctx.segmenter is not None:
        try:
            t1_labelling = label_levels(t1, np.asarray(ctx.segmenter.segment(t1)).astype(
                np.uint8))
        except ValueError as exc:
            ctx.warnings.append(f"disc findings: sagittal T1 not labelled ({exc}); T2 only")
            t1, t1_labelling = None, None
    volume = ctx.anatomy.volumes[ctx.anatomy.labels_role]
    entries = grader.predict(volume, ctx.labelling, t1_volume=t1, t1_labelling=t1_labelling,
                             semantic=ctx.semantic, measurements=ctx.anatomy.measurements)
    ctx.disc_findings = [withdraw(e) for e in entries]


def _overlay(ctx: _Context) -> None:
    assert ctx.anatomy is not None
    volume = ctx.anatomy.volumes[ctx.anatomy.labels_role]
    ctx.outputs["overlay"] = render_overlay(
        volume, ctx.anatomy.labels, ctx.anatomy.levels, ctx.anatomy.measurements,
        ctx.out_dir / "overlay.png", title=f"{ctx.anatomy.labels_role} {volume.description}")


def _results(ctx: _Context) -> None:
    assert ctx.anatomy is not None
    write_results = _require("models.reports", "write_results")
    findings = _document(ctx)  # as far as known before the result files exist
    ctx.outputs.update(write_results(findings, ctx.anatomy, ctx.source_files, ctx.out_dir))


_STAGE_FUNCS: dict[str, Callable[[_Context], None]] = {
    "select": _select, "assemble": _assemble, "segment": _segment, "levels": _levels,
    "measure": _measure, "grade": _grade, "discs": _discs, "overlay": _overlay,
    "results": _results,
}


def _series_entries(ctx: _Context) -> list[dict]:
    if ctx.selection is None:
        return []
    used = set(ctx.selection.chosen.values())
    return [{"series_instance_uid": d.series_instance_uid, "role": d.role,
             "used": d.series_instance_uid in used, "reason": d.reason}
            for d in ctx.selection.decisions]


def _level_entries(ctx: _Context) -> list[dict]:
    if ctx.anatomy is None:
        return []
    out = []
    for geom in sorted(ctx.anatomy.levels, key=lambda g: LEVELS.index(g.level)):
        out.append({
            "level": geom.level,
            "disc_centre_lps": np.round(geom.disc_centre_lps, 3).tolist(),
            "cranial_lps": np.round(geom.cranial_lps, 5).tolist(),
            "posterior_lps": np.round(geom.posterior_lps, 5).tolist(),
            "canal_centre_lps": np.round(geom.canal_centre_lps, 3).tolist(),
            "warnings": [*geom.warnings, *ctx.level_notes.get(geom.level, [])],
            "measurements": ctx.anatomy.measurements.get(geom.level, []),
        })
    return out


def _document(ctx: _Context, rejected: str | None = None) -> dict:
    """The findings document; status is derived unless the study was rejected."""
    status, reason = ("rejected", rejected) if rejected is not None else ("partial", None)
    if rejected is None and ctx.selection is not None:
        complete = ctx.selection.complete and ctx.findings and all(
            f.get("assessable") for f in ctx.findings)
        status = "complete" if complete else "partial"
    rsna = {rsna_key(f["condition"], f.get("side"), f["level"]): list(f["probabilities"])
            for f in ctx.findings if f.get("probabilities") is not None}
    labelling = ctx.labelling.summary() if ctx.labelling is not None else {
        "anchor": None, "ambiguous": None, "warnings": []}
    return {
        "schema": SCHEMA, "status": status, "reason": reason,
        "study_instance_uid": ctx.study_uid, "series": _series_entries(ctx),
        "models": ctx.models, "levels": _level_entries(ctx), "level_labelling": labelling,
        "findings": ctx.findings, "disc_findings": ctx.disc_findings, "rsna": rsna,
        "ood": ctx.ood,
        "review_required": sum(1 for f in ctx.findings if f.get("review", {}).get("required")),
        "notice": NOTICE, "warnings": list(ctx.warnings),
        "timings_s": dict(ctx.timings),
        "outputs": {k: p.name for k, p in ctx.outputs.items()},
    }


def analyze_study(files: list[Path], out_dir: Path, *, device: str = "auto",
                  progress: bool = False, segmenter: SegmenterLike | None = None) -> dict:
    """Run every stage on one study's files; write findings.json and the result objects.

    ``segmenter`` replaces the registered model (any object with ``card`` and ``segment``).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = _Context([Path(f) for f in files], out_dir, device, segmenter)
    rejected: str | None = None
    bar = tqdm(STAGES, desc="analyze", unit="stage", disable=not progress, leave=False)
    try:
        for name in bar:
            bar.set_postfix_str(name)
            start = time.perf_counter()
            try:
                _STAGE_FUNCS[name](ctx)
            finally:
                ctx.timings[name] = round(time.perf_counter() - start, 4)
    except Rejected as exc:
        rejected = str(exc)
    finally:
        bar.close()
    document = _document(ctx, rejected)
    (out_dir / "findings.json").write_text(json.dumps(document, indent=2, ensure_ascii=False),
                                          encoding="utf-8")
    return document
