"""Semantic spine mask to named vertebrae and discs, and the geometry of each disc level.

Levels are counted from the sacrum upwards because the sacrum is the one landmark a lumbar
sagittal field of view reliably contains; counting from the top would depend on where the
operator placed the field of view. Whenever the count cannot be trusted (no sacrum seen,
fewer than five discs above it, a rudimentary lowest disc that suggests transitional
anatomy) the labelling says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from lumbar_common.vocabulary import (
    LEVELS,
    SPIDER_CANAL,
    SPIDER_DISC_OFFSET,
    SPIDER_PARTIAL_OFFSET,
    SPIDER_SACRUM,
)
from models.study import LevelGeometry, Volume

VERTEBRA, DISC, CANAL = 1, 2, 3
#: disc components smaller than this fraction of the median disc are noise
MIN_DISC_FRACTION = 0.2
#: no lumbar disc is smaller than this (mm³) within a sagittal series
MIN_DISC_MM3 = 300.0
#: the sacral disc plane is tilted at least this much (degrees) against the disc above
SACRAL_TILT_DEG = 12.0
#: a lowest disc thinner than this fraction of the median disc suggests a transitional segment
RUDIMENTARY_DISC_FRACTION = 0.45
#: consecutive discs further apart than this multiple of the median spacing: one is missing
MISSING_DISC_FACTOR = 1.6
#: a disc taller than this multiple of the median may be two discs merged
MERGED_DISC_FACTOR = 2.2
#: a vertebra above L1 at least this large (height x depth) relative to L1 is lumbar-type
LUMBAR_TYPE_RATIO = 0.95
#: behind the disc's posterior margin by more than this (mm), bone belongs to the spinous
#: process, whose boundary with the next vertebra lies SPINOUS_DROP_MM below the disc plane
SPINOUS_START_MM = 14.0
SPINOUS_DROP_MM = 7.0
#: bone beside a body (mm³) that counts as rib heads
RIB_MM3 = 20.0
#: names of vertebrae counted upwards from the sacrum: every one a sagittal series can show,
#: so that a reader can count them in the SEG (grading still uses the lumbar levels only)
VERTEBRAE_FROM_SACRUM = ("L5", "L4", "L3", "L2", "L1",
                          *(f"T{n}" for n in range(12, 0, -1)))
#: names of discs counted upwards from the sacrum (the disc below each vertebra above)
DISCS_FROM_SACRUM = tuple(
    f"{upper}-{'S1' if lower is None else lower}"
    for upper, lower in zip(VERTEBRAE_FROM_SACRUM, (None, *VERTEBRAE_FROM_SACRUM), strict=False)
)


def vertebra_label(name: str) -> int:
    """SPIDER value of a whole vertebra, extended above T9 the way SPIDER counts
    (from the bottom: L5 = 1 … T12 = 6 … T1 = 17); the sacrum is ``SPIDER_SACRUM``.

    Equal to :func:`lumbar_common.vocabulary.spider_vertebra_label` wherever that one
    names the vertebra."""
    if name in ("S1", "sacrum"):
        return SPIDER_SACRUM
    if name not in VERTEBRAE_FROM_SACRUM:
        raise ValueError(f"no label for vertebra {name!r}")
    return VERTEBRAE_FROM_SACRUM.index(name) + 1


def disc_label(level: str) -> int:
    """SPIDER value of the disc below a vertebra (``"L5-S1"`` -> 201, ``"T1-T2"`` -> 217)."""
    if level not in DISCS_FROM_SACRUM:
        raise ValueError(f"no label for disc {level!r}")
    return SPIDER_DISC_OFFSET + DISCS_FROM_SACRUM.index(level) + 1


def structure_name(value: int) -> tuple[str, str, bool]:
    """(name, kind, partial) of a label value of :attr:`LevelLabelling.labels`; kind is
    ``"vertebra"``, ``"sacrum"``, ``"disc"`` or ``"canal"``. Raises ValueError for a value
    outside the scheme."""
    value = int(value)
    if value == SPIDER_CANAL:
        return "spinal canal", "canal", False
    if value == SPIDER_SACRUM:
        return "S1", "sacrum", False
    if SPIDER_DISC_OFFSET < value <= SPIDER_DISC_OFFSET + len(DISCS_FROM_SACRUM):
        return DISCS_FROM_SACRUM[value - SPIDER_DISC_OFFSET - 1], "disc", False
    partial = SPIDER_PARTIAL_OFFSET < value < SPIDER_DISC_OFFSET
    index = value - (SPIDER_PARTIAL_OFFSET if partial else 0)
    if 1 <= index <= len(VERTEBRAE_FROM_SACRUM):
        return VERTEBRAE_FROM_SACRUM[index - 1], "vertebra", partial
    raise ValueError(f"unknown label value {value!r}")


@dataclass
class Instance:
    """One vertebra or disc found in the mask."""

    name: str
    kind: str  # "vertebra" | "disc" | "sacrum"
    label: int  # SPIDER value
    mask: np.ndarray  # bool, volume grid
    centre_lps: np.ndarray
    partial: bool = False


@dataclass
class LevelLabelling:
    """Output of :func:`label_levels`: instance labels, disc geometry and how sure it is."""

    labels: np.ndarray
    instances: dict[str, Instance]
    levels: list[LevelGeometry]
    anchor: str
    ambiguous: bool
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """The ``level_labelling`` object of findings.json."""
        return {"anchor": self.anchor, "ambiguous": self.ambiguous,
                "warnings": list(self.warnings)}


def semantic_from_labels(labels: np.ndarray) -> np.ndarray:
    """SPIDER instance labels to the network's semantic classes (0 bg, 1 bone, 2 disc, 3 canal).

    The inverse direction of :func:`label_levels`; it turns reference annotations (SPIDER,
    the synthetic generator) into what the segmentation network produces.
    """
    values = np.asarray(labels)
    semantic = np.zeros(values.shape, np.uint8)
    bone = ((values >= 1) & (values < SPIDER_CANAL)) | (
        (values > SPIDER_CANAL) & (values < SPIDER_DISC_OFFSET))
    semantic[bone] = VERTEBRA
    semantic[values > SPIDER_DISC_OFFSET] = DISC
    semantic[values == SPIDER_CANAL] = CANAL
    return semantic


def _voxel_lps(volume: Volume, mask: np.ndarray) -> np.ndarray:
    return volume.index_to_lps(np.argwhere(mask))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n < 1e-9:
        raise ValueError("zero-length direction")
    return v / n


def _thinnest_axis(points: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """The disc's thinnest direction within the sagittal plane.

    Left-right is projected out first: a disc seen on one slice (a mid-sagittal key image)
    has no extent along it, which would otherwise make left-right its thinnest axis.
    """
    centred = points - points.mean(axis=0)
    centred = centred - np.outer(centred @ lr, lr)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    for axis in vt[::-1]:
        if abs(float(axis @ lr)) < 0.5:
            return axis
    return vt[-1]


def _touches_edge(mask: np.ndarray) -> bool:
    return bool(mask[:, 0, :].any() or mask[:, -1, :].any() or mask[:, :, 0].any()
                or mask[:, :, -1].any())


def _disc_components(volume: Volume, disc: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    comp, n = ndimage.label(disc, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return [], []
    sizes = ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1))
    # compare with the real discs (the largest few), not with the median of many specks
    reference = float(np.median(np.sort(sizes)[::-1][:5]))
    min_voxels = MIN_DISC_MM3 / float(np.prod(volume.spacing))
    keep = (sizes >= MIN_DISC_FRACTION * reference) & (sizes >= min_voxels)
    dropped = int((~keep).sum())
    notes = [f"{dropped} small disc fragment(s) ignored"] if dropped else []
    return [comp == i + 1 for i in np.flatnonzero(keep)], notes


def _lr_axis(volume: Volume) -> np.ndarray:
    """Unit slice normal of the sagittal volume: the patient's left-right direction."""
    return _unit(volume.affine[:3, 0])


def _in_plane(v: np.ndarray, lr: np.ndarray) -> np.ndarray:
    return _unit(v - (v @ lr) * lr)


def label_levels(volume: Volume, semantic: np.ndarray) -> LevelLabelling:
    """Split a semantic mask (0 bg, 1 vertebra, 2 disc, 3 canal) into named instances.

    ``semantic`` lies in the grid of ``volume`` (a sagittal series).
    """
    if semantic.shape != volume.array.shape:
        raise ValueError(f"mask shape {semantic.shape} differs from volume {volume.array.shape}")
    bad = np.setdiff1d(np.unique(semantic), [0, VERTEBRA, DISC, CANAL])
    if bad.size:
        raise ValueError(f"semantic mask holds unknown class values {bad.tolist()}")
    warnings: list[str] = []
    lr = _lr_axis(volume)
    discs, notes = _disc_components(volume, semantic == DISC)
    warnings += notes
    labels = np.zeros(semantic.shape, np.uint16)
    canal = _largest_component(semantic == CANAL)  # the canal is one tube; drop specks
    labels[canal] = SPIDER_CANAL
    if len(discs) < 2:
        warnings.append(f"only {len(discs)} disc(s) segmented: levels cannot be named")
        return LevelLabelling(labels, {}, [], "none", True, warnings)

    centres = np.array([_voxel_lps(volume, d).mean(axis=0) for d in discs])
    # order cranial -> caudal along the line through the disc centres (LPS +z is superior)
    _, _, vt = np.linalg.svd(centres - centres.mean(axis=0), full_matrices=False)
    axis = vt[0] if vt[0][2] >= 0 else -vt[0]
    order = np.argsort(-(centres @ axis))
    discs = [discs[i] for i in order]
    centres = centres[order]

    normals = []
    for i, d in enumerate(discs):
        n = _in_plane(_thinnest_axis(_voxel_lps(volume, d), lr), lr)
        local = centres[max(i - 1, 0)] - centres[min(i + 1, len(discs) - 1)]
        normals.append(n if n @ local >= 0 else -n)
    normals = np.array(normals)

    # vertebra voxels: the slab between two consecutive disc planes, decided at the nearest disc
    vert = semantic == VERTEBRA
    vidx = np.argwhere(vert)
    vpts = volume.index_to_lps(vidx)
    nearest = np.argmin(((vpts[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    rel = vpts - centres[nearest]
    # spinous processes slope caudally: behind the facets, the boundary between two
    # vertebrae lies below the plane of the disc between their bodies
    posteriors = np.array([_posterior(n, lr) for n in normals])
    margins = np.array([np.percentile((_voxel_lps(volume, d) - centres[i]) @ posteriors[i], 98)
                        for i, d in enumerate(discs)])
    behind = (rel * posteriors[nearest]).sum(-1) - margins[nearest]
    drop = np.where(behind > SPINOUS_START_MM, SPINOUS_DROP_MM, 0.0)
    above = (rel * normals[nearest]).sum(-1) > -drop
    slab = nearest + (~above)  # 0 = above the top disc, len(discs) = below the lowest disc
    slabs: list[np.ndarray] = []
    for k in range(len(discs) + 1):
        m = np.zeros(semantic.shape, bool)
        sel = vidx[slab == k]
        m[sel[:, 0], sel[:, 1], sel[:, 2]] = True
        slabs.append(m)

    heights = np.array([_extent(_voxel_lps(volume, d), centres[i], normals[i])
                        for i, d in enumerate(discs)])
    lowest_tilt = float(np.degrees(np.arccos(np.clip(abs(normals[-1] @ normals[-2]), 0, 1))))
    below = slabs[-1]
    below_height = _extent(_voxel_lps(volume, below), centres[-1], normals[-1]) if below.any() \
        else 0.0
    body_heights = [_extent(_voxel_lps(volume, s), centres[k], normals[k])
                    for k, s in enumerate(slabs[1:-1]) if s.any()]
    typical_body = float(np.median(body_heights)) if body_heights else 0.0
    sacrum_seen = below.any() and (
        lowest_tilt >= SACRAL_TILT_DEG or below_height >= 1.3 * typical_body)
    anchor, ambiguous = "sacrum", False
    if not sacrum_seen:
        ambiguous = True
        anchor = "lowest disc (sacrum not seen)"
        warnings.append("sacrum not identified below the lowest disc "
                        f"(tilt {lowest_tilt:.0f}°, height {below_height:.0f} mm): the lowest "
                        "disc is assumed to be L5-S1")
    gaps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    if len(gaps) >= 3:
        typical_gap = float(np.median(gaps))
        for i in np.flatnonzero(gaps > MISSING_DISC_FACTOR * typical_gap):
            ambiguous = True
            warnings.append(f"{gaps[i]:.0f} mm between discs {i + 1} and {i + 2} from the top "
                            f"(typical {typical_gap:.0f} mm): a disc may be missing from the "
                            "segmentation, levels above it may be misnamed")
    for i in np.flatnonzero(heights > MERGED_DISC_FACTOR * float(np.median(heights))):
        ambiguous = True
        warnings.append(f"disc {i + 1} from the top is {heights[i]:.0f} mm tall (median "
                        f"{float(np.median(heights)):.0f} mm): merged discs would shift the "
                        "level names")
    if heights[-1] < RUDIMENTARY_DISC_FRACTION * float(np.median(heights[:-1])):
        ambiguous = True
        warnings.append(f"lowest disc is rudimentary ({heights[-1]:.1f} mm vs median "
                        f"{float(np.median(heights[:-1])):.1f} mm): possible transitional "
                        "lumbosacral segment")
    if len(discs) < len(LEVELS):
        ambiguous = True
        warnings.append(f"only {len(discs)} discs in the field of view: levels above "
                        f"{DISCS_FROM_SACRUM[len(discs) - 1]} are not seen")
    if len(discs) > len(DISCS_FROM_SACRUM):
        ambiguous = True
        warnings.append(f"{len(discs)} discs found, more than can be named")

    if sacrum_seen and len(discs) >= 6:
        note = _lumbar_type_above_l1(volume, slabs, discs, centres, normals, lr)
        if note:
            ambiguous = True
            warnings.append(note)

    instances: dict[str, Instance] = {}
    n_named = min(len(discs), len(DISCS_FROM_SACRUM))
    for j in range(n_named):
        i = len(discs) - 1 - j
        name = DISCS_FROM_SACRUM[j]
        value = disc_label(name)
        labels[discs[i]] = value
        instances[name] = Instance(name, "disc", value, discs[i], centres[i])
    for j in range(min(len(slabs), len(VERTEBRAE_FROM_SACRUM) + 1)):
        k = len(slabs) - 1 - j
        part = _largest_parts(slabs[k])
        if not part.any():
            continue
        if j == 0:
            if not sacrum_seen:
                continue
            name, value, kind = "S1", SPIDER_SACRUM, "sacrum"
        else:
            name, kind = VERTEBRAE_FROM_SACRUM[j - 1], "vertebra"
            value = vertebra_label(name)
        partial = _touches_edge(part) and kind != "sacrum"
        if partial:
            value += SPIDER_PARTIAL_OFFSET
        labels[part] = value
        instances[name] = Instance(name, kind, value, part,
                                   _voxel_lps(volume, part).mean(axis=0), partial)

    canal_pts = _voxel_lps(volume, canal) if canal.any() else np.zeros((0, 3))
    levels: list[LevelGeometry] = []
    for j in range(min(len(discs), len(LEVELS))):
        i = len(discs) - 1 - j
        name = DISCS_FROM_SACRUM[j]
        cranial = normals[i]
        posterior = _posterior(cranial, lr)
        level_warn: list[str] = []
        canal_centre = _canal_centre(canal_pts, centres[i], cranial, posterior)
        if canal_centre is None:
            level_warn.append("spinal canal not segmented at this disc")
            canal_centre = centres[i] + posterior * 25.0
        levels.append(LevelGeometry(name, centres[i], cranial, posterior, canal_centre,
                                    tuple(level_warn)))
    levels.sort(key=lambda g: LEVELS.index(g.level))
    if "L5" not in instances and sacrum_seen:
        warnings.append("no vertebra between the two lowest discs")
    return LevelLabelling(labels, instances, levels, anchor, ambiguous, warnings)


def _body_size(volume: Volume, slab: np.ndarray, disc: np.ndarray, centre: np.ndarray,
               normal: np.ndarray, lr: np.ndarray) -> tuple[float, float] | None:
    """(height, depth) of the vertebral body in a slab, next to the disc below it."""
    if not slab.any() or _touches_edge(slab):
        return None
    posterior = _unit(np.cross(normal, lr))
    depth_axis = (_voxel_lps(volume, disc) - centre) @ posterior
    lo, hi = np.percentile(depth_axis, [2, 98])
    pts = _voxel_lps(volume, slab)
    rel = (pts - centre) @ posterior
    body = pts[(rel >= lo) & (rel <= hi)]
    if len(body) < 10:
        return None
    return _extent(body, centre, normal), float(hi - lo)


def _rib_bone_mm3(volume: Volume, slab: np.ndarray, disc: np.ndarray, centre: np.ndarray,
                  normal: np.ndarray, lr: np.ndarray) -> float:
    """Bone beside a vertebral body, level with its posterior half: where rib heads sit.

    Lumbar vertebrae have nothing there (pedicles and transverse processes lie behind the
    body); thoracic ones carry rib heads. Only meaningful when ribs are segmented as bone.
    """
    posterior = _posterior(normal, lr)
    dpts = _voxel_lps(volume, disc) - centre
    half_width = float(np.percentile(np.abs(dpts @ lr), 98))
    ap_lo, ap_hi = np.percentile(dpts @ posterior, [2, 98])
    rel = _voxel_lps(volume, slab) - centre
    ap = rel @ posterior
    beside = (np.abs(rel @ lr) > half_width + 2.0) & (ap > 0.5 * (ap_lo + ap_hi)) & (
        ap <= ap_hi) & ((rel @ normal) > 0)
    return float(beside.sum() * np.prod(volume.spacing))


def _lumbar_type_above_l1(volume: Volume, slabs: list[np.ndarray], discs: list[np.ndarray],
                          centres: np.ndarray, normals: np.ndarray, lr: np.ndarray) -> str | None:
    """A warning when the vertebra counted as T12 looks lumbar (six lumbar-type vertebrae?).

    Rib heads decide where they are segmented: T12 with rib bone is thoracic; T12 without
    while T11 has some is lumbar-type. Otherwise body size is the weaker cue: a T12 as large
    as L1.
    """
    n = len(discs)
    # slabs[k] lies above discs[k]; L1 sits above disc n-5 (L1-L2), T12 above disc n-6
    t12 = n - 6
    if _touches_edge(slabs[t12]):
        return None
    ribs_t12 = _rib_bone_mm3(volume, slabs[t12], discs[t12], centres[t12], normals[t12], lr)
    if ribs_t12 > RIB_MM3:
        return None
    if n >= 7:  # a partly seen T11 still shows rib heads when it has them
        ribs_t11 = _rib_bone_mm3(volume, slabs[n - 7], discs[n - 7], centres[n - 7],
                                 normals[n - 7], lr)
        if ribs_t11 > RIB_MM3:
            return ("vertebra counted as T12 has no rib heads while the one above has: six "
                    "lumbar-type vertebrae (transitional anatomy); levels are named from the "
                    "sacrum")
    l1 = _body_size(volume, slabs[n - 5], discs[n - 5], centres[n - 5], normals[n - 5], lr)
    t12_size = _body_size(volume, slabs[t12], discs[t12], centres[t12], normals[t12], lr)
    if l1 is None or t12_size is None:
        return None
    ratio = (t12_size[0] * t12_size[1]) / max(l1[0] * l1[1], 1e-6)
    if ratio < LUMBAR_TYPE_RATIO:
        return None
    return (f"vertebra counted as T12 is lumbar-sized ({t12_size[0]:.0f}x{t12_size[1]:.0f} mm "
            f"vs L1 {l1[0]:.0f}x{l1[1]:.0f} mm): possible six lumbar-type vertebrae "
            "(transitional anatomy); levels are named from the sacrum")


def _posterior(cranial: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """Unit vector in the sagittal plane, perpendicular to ``cranial``, towards LPS +y."""
    posterior = _unit(np.cross(cranial, lr))
    return posterior if posterior[1] >= 0 else -posterior


def _extent(points: np.ndarray, centre: np.ndarray, direction: np.ndarray) -> float:
    if len(points) == 0:
        return 0.0
    d = (points - centre) @ direction
    return float(np.percentile(d, 98) - np.percentile(d, 2))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    comp, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1))
    return comp == int(np.argmax(sizes)) + 1


def _largest_parts(mask: np.ndarray) -> np.ndarray:
    """Drop specks: keep components of at least 10 % of the largest one."""
    comp, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1))
    keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1
    return np.isin(comp, keep)


def _canal_centre(canal_pts: np.ndarray, centre: np.ndarray, cranial: np.ndarray,
                  posterior: np.ndarray) -> np.ndarray | None:
    if len(canal_pts) == 0:
        return None
    rel = canal_pts - centre
    near = (np.abs(rel @ cranial) <= 3.0) & (rel @ posterior > 0) & (
        np.linalg.norm(rel, axis=1) <= 60.0)
    if not near.any():
        return None
    return canal_pts[near].mean(axis=0)
