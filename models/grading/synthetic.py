"""A synthetic study folder -> :class:`StudyAnatomy` built from its ground truth.

Training and tests need the grader's input without running segmentation: the levels come
from truth.json (disc centre and normal) and the canal centre from the canal label, the
same quantities the pipeline derives from its own segmentation. Volumes are assembled from
the DICOM files exactly as the pipeline does (``models.volume``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lumbar_common.vocabulary import LEVELS, SPIDER_CANAL
from models.study import LevelGeometry, StudyAnatomy, Volume

#: half thickness (mm) of the slab around the disc plane used to find the canal centre
CANAL_SLAB_MM = 2.5


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64) / np.linalg.norm(v)


def level_axes(disc_normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cranial, posterior) unit vectors from a disc normal (either sign)."""
    cranial = _unit(disc_normal)
    if cranial[2] < 0:  # LPS +z is superior
        cranial = -cranial
    post = np.array([0.0, 1.0, 0.0]) - cranial[1] * cranial
    return cranial, _unit(post)


def canal_centre_from_labels(labels: np.ndarray, vol: Volume, disc: np.ndarray,
                             cranial: np.ndarray) -> np.ndarray | None:
    """Centroid of the canal label within a thin slab around the disc plane."""
    idx = np.argwhere(labels == SPIDER_CANAL)
    if len(idx) == 0:
        return None
    pts = vol.index_to_lps(idx)
    d = (pts - disc) @ cranial
    near = pts[np.abs(d) < CANAL_SLAB_MM]
    # the canal behind this disc, not a neighbouring level's
    near = near[np.linalg.norm(near - disc, axis=1) < 40.0]
    if len(near) == 0:
        return None
    return near.mean(axis=0)


def load_synthetic(study_dir: str | Path, roles: tuple[str, ...] | None = None
                   ) -> tuple[StudyAnatomy, dict]:
    """Anatomy and truth of a study written by ``lumbar-node synth``.

    ``roles`` limits which series are loaded (e.g. to drop the sagittal T1 in a test).
    """
    from models.volume import assemble_series

    study_dir = Path(study_dir)
    truth_path = study_dir / "truth.json"
    if not truth_path.exists():
        raise ValueError(f"{study_dir} is not a synthetic study: no truth.json")
    truth = json.loads(truth_path.read_text())
    corrupt = set(truth.get("corrupt_files", []))
    volumes: dict[str, Volume] = {}
    axial_stacks: list[Volume] = []
    warnings: list[str] = []
    for key, info in truth.get("series", {}).items():
        role = info.get("role", key)
        if role not in ("sag_t1", "sag_t2", "sag_stir", "ax_t2"):
            continue
        if roles is not None and role not in roles:
            continue
        files = [study_dir / f for f in info["files"] if f not in corrupt]
        assembled = assemble_series(files, role)
        warnings.extend(assembled.warnings)
        if role == "ax_t2":
            stacks = sorted(assembled.volumes, key=lambda v: -v.array.shape[0])
            volumes[role] = stacks[0]
            axial_stacks.extend(stacks[1:])
        else:
            volumes[role] = assembled.main
    sag_role = "sag_t2" if "sag_t2" in volumes else "sag_stir"
    labels = None
    label_file = truth.get("series", {}).get(sag_role, {}).get("label_file")
    if label_file and sag_role in volumes:
        with np.load(study_dir / label_file) as npz:
            uids = tuple(str(u) for u in npz["sop_instance_uids"])
            if uids == volumes[sag_role].sop_instance_uids:
                labels = npz["labels"]
            else:
                warnings.append("label volume slice order differs from the assembled series")
    levels: list[LevelGeometry] = []
    for name in LEVELS:
        info = truth.get("levels", {}).get(name)
        if info is None:
            continue
        disc = np.asarray(info["disc_centre_lps"], dtype=np.float64)
        cranial, post = level_axes(np.asarray(info["disc_normal_lps"]))
        canal = None
        if labels is not None:
            canal = canal_centre_from_labels(labels, volumes[sag_role], disc, cranial)
        if canal is None:
            sub = info.get("subarticular_centre_lps", {})
            if "left" in sub and "right" in sub:
                canal = (np.asarray(sub["left"]) + np.asarray(sub["right"])) / 2
            else:
                raise ValueError(f"{study_dir}: no canal label or subarticular centres at {name}")
        levels.append(LevelGeometry(name, disc, cranial, post, np.asarray(canal)))
    anatomy = StudyAnatomy(
        study_instance_uid=truth.get("study_instance_uid", ""), volumes=volumes,
        axial_stacks=axial_stacks, labels=labels, labels_role=sag_role, levels=levels,
        warnings=warnings,
    )
    return anatomy, truth
