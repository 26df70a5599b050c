"""Decide which series of a study is the sagittal T1, sagittal T2/STIR and axial T2.

PACS send whatever the scanner produced: localizers, calibration scans, re-acquisitions,
other body regions. Roles are derived from what the pixels are (slice orientation, MR
timing), because SeriesDescription is free text that each site writes differently; the
description only breaks ties that timing cannot decide. The DICOM node uses the same rules
to decide when a study is complete, so this module needs pydicom and numpy only and works
on header-only datasets (``dcmread(..., stop_before_pixels=True)``).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pydicom
from pydicom.dataset import Dataset

ROLES: Final[tuple[str, ...]] = ("sag_t1", "sag_t2", "sag_stir", "ax_t2")
OTHER: Final = "other"
DEFAULT_RULES_PATH: Final = Path(__file__).with_name("series_rules.toml")
RULES_ENV: Final = "LUMBAR_NODE_SERIES_RULES"


@dataclass(frozen=True)
class SeriesDecision:
    """The role given to one series and the evidence it was given on."""

    series_instance_uid: str
    role: str
    reason: str
    plane: str = "unknown"
    n_instances: int = 0
    description: str = ""
    #: False when the series says it shows another body region (brain, cervical, …)
    lumbar: bool | None = None

    @property
    def usable(self) -> bool:
        return self.role != OTHER


@dataclass
class StudySelection:
    """Chosen series per role, and why the study can or cannot be analysed."""

    decisions: list[SeriesDecision]
    chosen: dict[str, str] = field(default_factory=dict)
    is_lumbar: bool = True
    rejected_reason: str | None = None

    @property
    def sagittal_role(self) -> str | None:
        """The sagittal fluid-sensitive series the segmentation runs on (T2 preferred)."""
        for role in ("sag_t2", "sag_stir"):
            if role in self.chosen:
                return role
        return None

    @property
    def complete(self) -> bool:
        return (
            self.rejected_reason is None
            and self.sagittal_role is not None
            and "sag_t1" in self.chosen
            and "ax_t2" in self.chosen
        )

    def decision(self, series_instance_uid: str) -> SeriesDecision:
        for d in self.decisions:
            if d.series_instance_uid == series_instance_uid:
                return d
        raise KeyError(f"no decision for series {series_instance_uid!r}")


def load_rules(path: Path | str | None = None) -> dict[str, Any]:
    """Read the rules TOML: ``path``, else ``$LUMBAR_NODE_SERIES_RULES``, else the packaged file."""
    chosen = Path(path) if path is not None else Path(os.environ.get(RULES_ENV, DEFAULT_RULES_PATH))
    if not chosen.is_file():
        raise ValueError(f"series rules file not found: {chosen}")
    with chosen.open("rb") as fh:
        rules = tomllib.load(fh)
    for section in ("geometry", "localizer", "timing", "keywords", "anatomy"):
        if section not in rules:
            raise ValueError(f"series rules {chosen} lack the [{section}] section")
    return rules


_RULES_CACHE: dict[str, dict[str, Any]] = {}


def _rules(rules: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if rules is not None:
        return rules
    key = os.environ.get(RULES_ENV, str(DEFAULT_RULES_PATH))
    if key not in _RULES_CACHE:
        _RULES_CACHE[key] = load_rules()
    return _RULES_CACHE[key]


# --- header access (classic and enhanced multi-frame MR) -----------------------------------


def _functional(ds: Dataset, seq: str, attr: str) -> Any:
    """An attribute from the shared, else the first per-frame, functional group."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if groups in ds and len(ds[groups].value) > 0:
            item = ds[groups].value[0]
            if seq in item and len(item[seq].value) > 0 and attr in item[seq].value[0]:
                return item[seq].value[0][attr].value
    return None


def _orientation(ds: Dataset) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        iop = _functional(ds, "PlaneOrientationSequence", "ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    return np.asarray([float(v) for v in iop], dtype=np.float64)


def _number(ds: Dataset, keyword: str, seq: str | None = None, seq_attr: str | None = None) -> (
        float | None):
    value = ds.get(keyword)
    if (value is None or value == "") and seq is not None:
        value = _functional(ds, seq, seq_attr or keyword)
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
        if value is None:
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value or "")


def slice_normal(iop: Sequence[float]) -> np.ndarray:
    """Unit normal of an image plane from ImageOrientationPatient."""
    v = np.asarray(iop, dtype=np.float64)
    n = np.cross(v[:3], v[3:6])
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        raise ValueError(f"ImageOrientationPatient {list(iop)} has parallel row/column vectors")
    return n / norm


def _angle_deg(normal: np.ndarray, axis: int) -> float:
    return math.degrees(math.acos(min(1.0, abs(float(normal[axis])))))


# --- classification -----------------------------------------------------------------------


def _plane(orientations: list[np.ndarray], rules: Mapping[str, Any]) -> tuple[str, str]:
    normals = [slice_normal(o) for o in orientations]
    ref = normals[0]
    spread = max(math.degrees(math.acos(min(1.0, abs(float(ref @ n))))) for n in normals)
    geo = rules["geometry"]
    sag, ax = _angle_deg(ref, 0), _angle_deg(ref, 2)
    if spread > 45.0:
        # Axial blocks angled along each disc follow the lordosis: L1-L2 and L5-S1 blocks
        # can differ by 45-60°, yet every block is axial. A localizer mixes planes.
        steepest = max(_angle_deg(n, 2) for n in normals)
        if steepest <= float(geo["axial_max_angle_deg"]):
            return "axial", (f"slice normals at most {steepest:.0f}° from ±z in blocks angled "
                             f"{spread:.0f}° apart (axial, angled per disc)")
        return "mixed", f"slice normals differ by {spread:.0f}° within the series (multi-plane)"
    if sag <= float(geo["sagittal_max_angle_deg"]):
        return "sagittal", f"slice normal {sag:.0f}° from ±x (sagittal)"
    if ax <= float(geo["axial_max_angle_deg"]):
        return "axial", f"slice normal {ax:.0f}° from ±z (axial)"
    return "other", f"slice normal {sag:.0f}° from x, {ax:.0f}° from z (coronal or oblique)"


def _n_images(headers: Sequence[Dataset]) -> int:
    total = 0
    for ds in headers:
        frames = ds.get("NumberOfFrames")
        total += int(frames) if frames not in (None, "") else 1
    return total


def _weighting(ds: Dataset, description: str, rules: Mapping[str, Any]) -> tuple[str | None, str]:
    """'t1', 't2', 'stir' or None, with the reason."""
    t = rules["timing"]
    tr = _number(ds, "RepetitionTime", "MRTimingAndRelatedParametersSequence")
    te = _number(ds, "EchoTime", "MREchoSequence", "EffectiveEchoTime")
    ti = _number(ds, "InversionTime", "MRModifierSequence", "InversionTimes")
    seq = _text(ds, "ScanningSequence").upper() + "\\" + _text(ds, "SequenceVariant").upper()
    ir = "IR" in seq.split("\\") or _text(ds, "InversionRecovery").upper() == "YES" or (
        ti is not None and ti > 0)
    parts = [f"TR {tr:g} ms" if tr is not None else "TR ?", f"TE {te:g} ms" if te is not None
             else "TE ?"]
    if ti is not None:
        parts.append(f"TI {ti:g} ms")
    timing = ", ".join(parts)
    if ir and ti is not None and t["stir_ti_min_ms"] <= ti <= t["stir_ti_max_ms"]:
        return "stir", f"{timing}: inversion recovery with short TI → STIR"
    if te is not None and te >= t["t2_min_te_ms"]:
        return "t2", f"{timing}: TE ≥ {t['t2_min_te_ms']:g} → T2"
    if te is not None and te <= t["t1_max_te_ms"]:
        if tr is not None and tr <= t["t1_max_tr_ms"]:
            return "t1", f"{timing}: short TR and TE → T1"
        if ir and ti is not None and t["t1_flair_ti_min_ms"] <= ti <= t["t1_flair_ti_max_ms"]:
            return "t1", f"{timing}: inversion recovery with T1-FLAIR TI → T1"
    kw = rules["keywords"]
    for name in ("stir", "t2", "t1"):
        if re.search(kw[name], description):
            return name, f"{timing}: timing undecided, description {description!r} → {name.upper()}"
    return None, f"{timing}: neither timing nor description decide the weighting"


def _anatomy(ds: Dataset, description: str, rules: Mapping[str, Any]) -> tuple[bool | None, str]:
    a = rules["anatomy"]
    part = re.sub(r"[^A-Z]", "", _text(ds, "BodyPartExamined").upper())
    if part in a["other_body_parts"]:
        return False, f"BodyPartExamined {part}"
    if part in a["lumbar_body_parts"]:
        return True, f"BodyPartExamined {part}"
    texts = " ".join([description, _text(ds, "StudyDescription"), _text(ds, "ProtocolName")])
    if re.search(a["lumbar_regex"], texts):
        return True, "description names the lumbar spine"
    match = re.search(a["other_regex"], texts)
    if match:
        return False, f"description names {match.group(0)!r}"
    return None, "no body part stated"


def classify_series(headers: Sequence[Dataset], rules: Mapping[str, Any] | None = None) -> (
        SeriesDecision):
    """Role of one series (all its instance headers) with the reason for it."""
    if not headers:
        raise ValueError("classify_series needs at least one dataset")
    r = _rules(rules)
    ds = headers[0]
    uid = str(ds.get("SeriesInstanceUID", ""))
    if not uid:
        raise ValueError("dataset has no SeriesInstanceUID")
    description = _text(ds, "SeriesDescription")
    n = _n_images(headers)
    lumbar, anatomy_reason = _anatomy(ds, description, r)

    def decide(role: str, reason: str, plane: str = "unknown") -> SeriesDecision:
        return SeriesDecision(uid, role, reason, plane, n, description, lumbar)

    modality = _text(ds, "Modality")
    if modality != "MR":
        return decide(OTHER, f"modality {modality or 'missing'} is not MR")
    image_type = _text(ds, "ImageType").upper()
    loc = r["localizer"]
    for word in loc["image_type_keywords"]:
        if word in image_type:
            return decide(OTHER, f"ImageType {image_type} marks a localizer")
    if lumbar is False:
        return decide(OTHER, f"not lumbar spine: {anatomy_reason}")
    orientations = [o for o in (_orientation(h) for h in headers) if o is not None]
    if not orientations:
        return decide(OTHER, "no ImageOrientationPatient")
    try:
        plane, plane_reason = _plane(orientations, r)
    except ValueError as exc:
        return decide(OTHER, str(exc))
    if plane == "mixed":
        return decide(OTHER, f"{plane_reason} → localizer", plane)
    if re.search(loc["description_regex"], description):
        return decide(OTHER, f"description {description!r} marks a localizer", plane)
    weighting, weight_reason = _weighting(ds, description, r)
    reason = f"{plane_reason}; {weight_reason}"
    if n < int(loc["min_slices"]):
        # A few diagnostic sagittal slices (a mid-sagittal key image, a short series) still
        # show every disc; a scout does not: it is fast gradient echo with a very short TR.
        tr = _number(ds, "RepetitionTime", "MRTimingAndRelatedParametersSequence")
        few_ok = (plane == "sagittal" and weighting is not None and tr is not None
                  and tr >= float(loc.get("few_slices_min_tr_ms", 300.0)))
        if not few_ok:
            return decide(OTHER, f"{n} images < {loc['min_slices']} → localizer or scout", plane)
        return decide(f"sag_{weighting}", f"{reason}; only {n} image(s): disc findings only",
                      plane)
    if plane == "sagittal" and weighting is not None:
        return decide(f"sag_{weighting}", reason, plane)
    if plane == "axial" and weighting == "t2":
        return decide("ax_t2", reason, plane)
    return decide(OTHER, f"{reason}; no role for this plane and weighting", plane)


def select_study(headers_by_series: Mapping[str, Sequence[Dataset]],
                 rules: Mapping[str, Any] | None = None) -> StudySelection:
    """Classify every series of a study and choose one per role.

    When several series share a role the one with the most images wins (re-acquisitions are
    usually complete where the first attempt was aborted); ties go to the later series.
    """
    r = _rules(rules)
    decisions = [classify_series(list(h), r) for _, h in sorted(headers_by_series.items()) if h]
    selection = StudySelection(decisions=decisions)
    for role in ROLES:
        candidates = [d for d in decisions if d.role == role]
        if candidates:
            best = max(candidates, key=lambda d: (d.n_instances, _series_number(
                headers_by_series.get(d.series_instance_uid))))
            selection.chosen[role] = best.series_instance_uid
    mr = [d for d in decisions if not d.reason.startswith("modality")]
    anatomy = [d.lumbar for d in mr]
    if mr and not any(a is True for a in anatomy) and any(a is False for a in anatomy) and (
            not selection.chosen):
        selection.is_lumbar = False
        others = sorted({d.reason.split(": ", 1)[-1] for d in mr if d.lumbar is False})
        selection.rejected_reason = f"not a lumbar spine study ({'; '.join(others)})"
    elif not decisions:
        selection.rejected_reason = "no series in study"
    elif selection.sagittal_role is None:
        selection.rejected_reason = "no usable sagittal T2 or STIR series"
    return selection


def _series_number(headers: Sequence[Dataset] | None) -> int:
    if not headers:
        return 0
    try:
        return int(headers[0].get("SeriesNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def read_headers(paths: Iterable[Path]) -> tuple[dict[str, list[Dataset]], list[str]]:
    """Header-only datasets grouped by SeriesInstanceUID, plus one warning per unreadable file."""
    by_series: dict[str, list[Dataset]] = {}
    warnings: list[str] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # any unreadable file is skipped and recorded
            warnings.append(f"{path}: unreadable ({type(exc).__name__}: {exc})")
            continue
        uid = ds.get("SeriesInstanceUID")
        if not uid:
            warnings.append(f"{path}: no SeriesInstanceUID")
            continue
        by_series.setdefault(str(uid), []).append(ds)
    return by_series, warnings
