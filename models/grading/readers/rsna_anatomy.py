"""An RSNA 2024 study -> :class:`StudyAnatomy` and per-level grades, for training.

RSNA gives no segmentation, but its readers pointed at the spinal canal at every level on the
sagittal T2 (``train_label_coordinates.csv``). Those points, mapped to patient space through
the series geometry, are the canal centres; the spine's cranial axis comes from neighbouring
levels and the posterior axis is the patient's +y made perpendicular to it. That is all the
level-driven crops need, so RSNA studies train the same network the synthetic ones do.
"""

from __future__ import annotations

import numpy as np
import pydicom

from lumbar_common.vocabulary import CANAL, FORAMEN, GRADES, LEVELS, SIDES, SUBARTICULAR, rsna_key
from models.grading.readers.rsna import RsnaStudy
from models.study import LevelGeometry, StudyAnatomy, Volume

#: the disc centre lies about this far in front of the canal centre in adults
CANAL_TO_DISC_MM = 12.0


def _load(study: RsnaStudy, series_id: str, role: str) -> Volume:
    from models.volume import assemble_series

    return assemble_series(study.series_files(series_id), role).main


def _point(study: RsnaStudy, volume: Volume, series_id: str, instance: int, x: float,
           y: float) -> np.ndarray:
    path = study.image_root / study.study_id / series_id / f"{instance}.dcm"  # type: ignore[operator]
    if not path.exists():
        raise ValueError(f"study {study.study_id}: coordinate on missing instance {path}")
    uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    if uid not in volume.sop_instance_uids:
        raise ValueError(f"study {study.study_id}: instance {instance} not in the assembled series")
    return volume.index_to_lps(np.array([volume.sop_instance_uids.index(uid), y, x], float))


def rsna_anatomy(study: RsnaStudy) -> tuple[StudyAnatomy, dict[str, np.ndarray]]:
    """Anatomy from the canal coordinates, and level -> RSNA grade indices (-1: unlabelled)
    in the order [canal, foramen L, foramen R, subarticular L, subarticular R]."""
    roles = {role: sid for sid, role in study.series_roles.items()}
    if "sag_t2" not in roles:
        raise ValueError(f"study {study.study_id}: no Sagittal T2/STIR series")
    volumes = {role: _load(study, sid, role) for role, sid in roles.items()}
    canal_pts: dict[str, np.ndarray] = {}
    for level in LEVELS:
        c = study.coordinates.get(rsna_key(CANAL, None, level))
        if c is not None and c.series_id == roles["sag_t2"]:
            canal_pts[level] = _point(study, volumes["sag_t2"], c.series_id, c.instance_number,
                                      c.x, c.y)
    if len(canal_pts) < 2:
        raise ValueError(f"study {study.study_id}: fewer than two canal coordinates on the "
                         "sagittal T2")
    names = [lv for lv in LEVELS if lv in canal_pts]
    levels: list[LevelGeometry] = []
    for i, name in enumerate(names):
        upper = canal_pts[names[max(i - 1, 0)]]
        lower = canal_pts[names[min(i + 1, len(names) - 1)]]
        cranial = (upper - lower) / np.linalg.norm(upper - lower)
        post = np.array([0.0, 1.0, 0.0]) - cranial[1] * cranial
        post /= np.linalg.norm(post)
        canal = canal_pts[name]
        levels.append(LevelGeometry(name, canal - CANAL_TO_DISC_MM * post, cranial, post, canal))
    targets: dict[str, np.ndarray] = {}
    for name in names:
        keys = [rsna_key(CANAL, None, name)] + [rsna_key(FORAMEN, s, name) for s in SIDES] + [
            rsna_key(SUBARTICULAR, s, name) for s in SIDES]
        targets[name] = np.array([GRADES.index(study.labels[k]) if k in study.labels else -1
                                  for k in keys], np.int64)
    anatomy = StudyAnatomy(study_instance_uid=study.study_id, volumes=volumes, levels=levels)
    return anatomy, targets


def rsna_samples(study: RsnaStudy) -> dict[str, np.ndarray]:
    """Training samples (as :func:`models.grading.dataset.study_samples`) of one study."""
    from models.grading.dataset import level_inputs

    anatomy, targets = rsna_anatomy(study)
    rows: dict[str, list[np.ndarray]] = {}
    for level in anatomy.levels:
        x = level_inputs(anatomy, level)
        x.update(y=targets[level.level], y_lss=np.array([-1, -1], np.int64),
                 level=np.int64(LEVELS.index(level.level)))
        for k, v in x.items():
            rows.setdefault(k, []).append(np.asarray(v))
    return {k: np.stack(v) for k, v in rows.items()}
