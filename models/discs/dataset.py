"""Disc samples from the node's own path: segmentation -> level labelling -> crops and
measured disc heights, for training (cached) and for inference (one study at a time).

The grader sees discs exactly as the pipeline finds them — where the labelling is off by a
level or a disc is missed on a real image, training sees that too — so its cross-validated
figures describe the node, not an idealised annotation. Segmenting the 285 images is done
once and cached under ``/tmp`` (keyed by the segmentation weights and the crop geometry), so
cross-validation folds and reruns never segment again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.discs.crops import (
    CROP_COLS,
    CROP_MM,
    CROP_ROWS,
    MAX_OUTSIDE_FRACTION,
    POSTERIOR_SHIFT_MM,
    Jitter,
    disc_crop,
)
from models.discs.signal import (
    CSF_REACH_MM,
    ENDPLATE_BAND_MM,
    N_SIGNAL,
    SIGNAL_FEATURES,
    level_signal,
)
from models.levels import LevelLabelling
from models.study import Volume

#: level names in the order of the level one-hot (index 6: any disc above T12-L1)
LEVEL_ORDER: tuple[str, ...] = ("L5-S1", "L4-L5", "L3-L4", "L2-L3", "L1-L2", "T12-L1")
N_LEVEL_CODES = len(LEVEL_ORDER) + 1
#: scalar features from models.measurements, each over the patient's median body height
#: (relative_height: over the median disc height of the same image)
FEATURES: tuple[str, ...] = ("disc_height_mean", "disc_height_anterior", "disc_height_posterior",
                             "relative_height", "slip_signed")
N_FEATURES = len(FEATURES)
#: binary findings, in logit order after Pfirrmann (5) and Modic (4)
BINARY: tuple[str, ...] = ("endplate_upper", "endplate_lower", "herniation", "bulging",
                           "narrowing", "spondylolisthesis")
N_PFIRRMANN, N_MODIC = 5, 4
N_LOGITS = N_PFIRRMANN + N_MODIC + len(BINARY)
#: output heads (one temperature each), in logit order
HEADS: tuple[str, ...] = ("pfirrmann", "modic", *BINARY)
#: jittered copies cached per disc and image, besides the exact crop
DEFAULT_COPIES = 4
DEFAULT_CACHE = Path("/tmp/lumbar-node-discs")


def level_code(level: str) -> int:
    """Index of a level in the one-hot (discs above T12-L1 share the last code)."""
    if not isinstance(level, str) or "-" not in level:
        raise ValueError(f"level must be a disc name like 'L4-L5', got {level!r}")
    return LEVEL_ORDER.index(level) if level in LEVEL_ORDER else len(LEVEL_ORDER)


def level_features(measurements: dict[str, list[dict]]) -> dict[str, tuple[np.ndarray,
                                                                           np.ndarray]]:
    """Per level: (features, present mask), heights normalised by the median vertebral body
    height of the image so that body size and the PNGs' estimated row spacing cancel (as in
    ``benchmarks/real_discs.py``)."""
    values = {lv: {m["name"]: float(m["value"]) for m in ms} for lv, ms in measurements.items()}
    bodies = [m["vertebral_body_height"] for m in values.values() if "vertebral_body_height" in m]
    scale = float(np.median(bodies)) if bodies else float("nan")
    heights = [m["disc_height_mean"] for m in values.values() if "disc_height_mean" in m]
    own = float(np.median(heights)) if heights else float("nan")
    out = {}
    for level, m in values.items():
        raw = {name: m.get(name, float("nan")) / scale for name in FEATURES[:3]}
        raw["relative_height"] = m.get("disc_height_mean", float("nan")) / own
        raw["slip_signed"] = m.get("listhesis", float("nan")) / scale
        feats = np.array([raw[n] for n in FEATURES], dtype=np.float32)
        present = np.isfinite(feats)
        out[level] = (np.where(present, feats, 0.0).astype(np.float32),
                      present.astype(np.float32))
    return out


@dataclass
class ImageDiscs:
    """Every disc the node found on one image: crops [1 + copies, H, W], features, flags."""

    crops: dict[str, np.ndarray]
    outside: dict[str, float]
    features: dict[str, tuple[np.ndarray, np.ndarray]]
    ambiguous: bool
    #: per level: signal-intensity ratios (models.discs.signal) and their present mask
    signal: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def image_discs(volume: Volume, semantic: np.ndarray, labelling: LevelLabelling,
                copies: int = 0, rng: np.random.Generator | None = None,
                measurements: dict[str, list[dict]] | None = None) -> ImageDiscs:
    """Crops (the exact one first, then ``copies`` jittered ones) and features per level."""
    from models.measurements import measure_levels

    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    rng = rng or np.random.default_rng(0)
    if measurements is None:
        measurements, _ = measure_levels(volume, semantic, labelling)
    feats = level_features(measurements)
    signal = level_signal(volume, semantic, labelling)
    crops, outside = {}, {}
    empty = (np.zeros(len(FEATURES), np.float32), np.zeros(len(FEATURES), np.float32))
    for geom in labelling.levels:
        jitters = [Jitter()] + [Jitter.draw(rng) for _ in range(copies)]
        made = [disc_crop(volume, geom, j) for j in jitters]
        crops[geom.level] = np.stack([c.image for c in made]).astype(np.float16)
        outside[geom.level] = made[0].outside_fraction
        feats.setdefault(geom.level, empty)
        signal.setdefault(geom.level, (np.zeros(N_SIGNAL, np.float32),
                                       np.zeros(N_SIGNAL, np.float32)))
    return ImageDiscs(crops, outside, feats, bool(labelling.ambiguous), signal)


def cache_key(segmentation_sha: str, copies: int, patients: list[str]) -> str:
    spec = {"seg": segmentation_sha, "copies": copies, "rows": CROP_ROWS, "cols": CROP_COLS,
            "mm": CROP_MM, "shift": POSTERIOR_SHIFT_MM, "features": FEATURES,
            "signal": SIGNAL_FEATURES, "band": ENDPLATE_BAND_MM, "csf": CSF_REACH_MM,
            "patients": sorted(patients), "v": 2}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def build_samples(data: Path, cache: Path = DEFAULT_CACHE, copies: int = DEFAULT_COPIES,
                  exclude: set[str] | None = None, seed: int = 0,
                  progress: bool = True) -> dict[str, np.ndarray]:
    """One sample per graded (patient, disc) the node found on the T2 or the T1 image.

    Arrays: ``t2``/``t1`` [n, 1 + copies, H, W] (zeros where that image is missing or the
    disc was not found on it), ``presence`` [n, 2] (T2, T1), ``feats``/``feat_mask``
    [n, N_FEATURES] (from the T2, else the T1), ``level`` [n], ``patient`` [n] str,
    ``level_name`` [n] str, ``outside`` [n], ``ambiguous`` [n] and the targets
    (``pfirrmann`` 0-4, ``modic`` 0-3 and the binary findings, see ``models.discs.net``).
    """
    from models.pipeline import load_segmenter
    from models.realdata.midsag import load_midsag_volume
    from models.realdata.spider import load_gradings, midsag_images
    from models.registry import load_card

    exclude = exclude or set()
    images = [m for m in midsag_images(data) if m.patient not in exclude]
    patients = sorted({m.patient for m in images})
    key = cache_key(load_card("segmentation")["sha256"], copies, patients)
    path = cache / f"samples-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    segmenter = load_segmenter("cpu")
    gradings = load_gradings(data / "gradings.csv")
    rng = np.random.default_rng(seed)
    per_image: dict[tuple[str, str], ImageDiscs] = {}
    for i, img in enumerate(images):
        volume = load_midsag_volume(img.path, img.row_mm, img.col_mm,
                                    f"{img.patient}_{img.sequence}", img.slice_thickness_mm)
        per_image[(img.patient, img.sequence)] = discs_of(segmenter, volume, copies, rng)
        if progress and (i + 1) % 25 == 0:
            print(f"  segmented {i + 1}/{len(images)} images", flush=True)
    zeros = np.zeros((1 + copies, CROP_ROWS, CROP_COLS), np.float16)
    rows: dict[str, list] = {k: [] for k in (
        "t2", "t1", "presence", "feats", "feat_mask", "sig", "sig_mask", "level", "patient",
        "level_name", "outside", "ambiguous", "pfirrmann", "modic", *BINARY)}
    for patient in patients:
        t2, t1 = per_image.get((patient, "t2")), per_image.get((patient, "t1"))
        found = set(t2.crops if t2 else ()) | set(t1.crops if t1 else ())
        for level in sorted(found):
            g = gradings.get((patient, level))
            if g is None:
                continue
            has2 = t2 is not None and level in t2.crops
            has1 = t1 is not None and level in t1.crops
            main = t2 if has2 else t1
            assert main is not None
            rows["t2"].append(t2.crops[level] if has2 else zeros)
            rows["t1"].append(t1.crops[level] if has1 else zeros)
            rows["presence"].append([float(has2), float(has1)])
            rows["feats"].append(main.features[level][0])
            rows["feat_mask"].append(main.features[level][1])
            none = (np.zeros(N_SIGNAL, np.float32), np.zeros(N_SIGNAL, np.float32))
            s2 = t2.signal.get(level, none) if has2 and t2 is not None else none
            s1 = t1.signal.get(level, none) if has1 and t1 is not None else none
            rows["sig"].append(np.concatenate([s2[0], s1[0]]))
            rows["sig_mask"].append(np.concatenate([s2[1], s1[1]]))
            rows["level"].append(level_code(level))
            rows["patient"].append(patient)
            rows["level_name"].append(level)
            rows["outside"].append(main.outside[level])
            rows["ambiguous"].append(main.ambiguous)
            rows["pfirrmann"].append(g.pfirrmann - 1)
            rows["modic"].append(g.modic)
            for name in BINARY:
                rows[name].append(int(getattr(g, "listhesis" if name == "spondylolisthesis"
                                              else name)))
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["patient"] = out["patient"].astype(str)
    out["level_name"] = out["level_name"].astype(str)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return out


def discs_of(segmenter: object, volume: Volume, copies: int = 0,
             rng: np.random.Generator | None = None) -> ImageDiscs:
    """Segment, label and crop one volume the way the pipeline does."""
    from models.levels import label_levels

    semantic = segmenter.segment(volume)  # type: ignore[attr-defined]
    labelling = label_levels(volume, semantic)
    return image_discs(volume, semantic, labelling, copies, rng)


def assessable(outside_fraction: float) -> tuple[bool, str | None]:
    """Whether a crop shows enough of the disc, and why not."""
    if outside_fraction > MAX_OUTSIDE_FRACTION:
        return False, (f"disc window {outside_fraction:.0%} outside the image "
                       f"(more than {MAX_OUTSIDE_FRACTION:.0%})")
    return True, None
