"""Writes every result object of one analysed study: the API the pipeline calls."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from lumbar_common.vocabulary import SPIDER_CANAL
from models.reports.equipment import algorithm_from_models, contributing_equipment, node_algorithm
from models.reports.frames import frame_numbers, is_multiframe
from models.reports.keyimage import build_key_image, build_kos
from models.reports.seg import build_seg
from models.reports.sr import build_sr, check_findings
from models.reports.uids import model_versions, result_uid
from models.study import StudyAnatomy, Volume


class SourceHeaders(Mapping[str, Dataset]):
    """SOPInstanceUID -> source header, read from disk (without pixels) on first use.

    A study has hundreds of instances and the result objects reference a few dozen, so
    reading only those keeps ``write_results`` fast on big studies.
    """

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._files = dict(files)
        self._cache: dict[str, Dataset] = {}

    def __getitem__(self, sop_instance_uid: str) -> Dataset:
        if sop_instance_uid not in self._cache:
            path = self._files[sop_instance_uid]
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if str(ds.SOPInstanceUID) != sop_instance_uid:
                raise ValueError(
                    f"{path} holds SOP instance {ds.SOPInstanceUID}, not {sop_instance_uid}"
                )
            self._cache[sop_instance_uid] = ds
        return self._cache[sop_instance_uid]

    def __contains__(self, sop_instance_uid: object) -> bool:
        return sop_instance_uid in self._files

    def require(self, sop_instance_uid: str) -> Dataset:
        """The header, or a ValueError naming the instance that has no source file."""
        if sop_instance_uid not in self._files:
            raise ValueError(f"no source file for SOP instance {sop_instance_uid!r}")
        return self[sop_instance_uid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def write_results(
    findings: dict,
    anatomy: StudyAnatomy,
    source_files: dict[str, Path],
    out_dir: Path,
    *,
    labelmap: bool = False,
) -> dict[str, Path]:
    """Writes ``sr.dcm``, ``seg_<role>.dcm``, ``keyimage.dcm`` and ``ko.dcm`` into ``out_dir``.

    Returns ``{"sr": …, "seg_sag_t2": …, "keyimage": …, "ko": …}``. UIDs are derived from
    the study and the model versions, so writing again gives the same objects.
    """
    study_uid = str(findings.get("study_instance_uid") or "")
    if study_uid != anatomy.study_instance_uid:
        raise ValueError(
            f"findings are for study {study_uid!r}, anatomy for {anatomy.study_instance_uid!r}"
        )
    check_findings(findings)
    models = findings.get("models") or {}
    versions = model_versions(models)
    equipment = contributing_equipment(models, study_uid)
    headers = SourceHeaders(source_files)

    def uid(kind: str) -> str:
        return result_uid(study_uid, versions, kind)

    # everything is built before anything is written: bad input leaves no partial results
    objects: dict[str, Dataset] = {}
    if anatomy.labels is not None:
        volume = _labels_volume(anatomy)
        role = anatomy.labels_role
        sources = [headers.require(sop) for sop in volume.sop_instance_uids]
        frames = (
            frame_numbers(sources[0], volume, range(len(sources)))
            if is_multiframe(sources[0])
            else None
        )
        objects[f"seg_{role}"] = build_seg(
            sources,
            anatomy.labels,
            algorithm_from_models(models, "segmentation"),
            series_instance_uid=uid(f"seg/{role}/series"),
            sop_instance_uid=uid(f"seg/{role}/instance"),
            labelmap=labelmap,
            contributing_equipment=equipment,
            frame_numbers=frames,
        )
    objects["sr"] = build_sr(
        findings,
        [*anatomy.volumes.values(), *anatomy.axial_stacks],
        headers,
        segs=list(objects.values()),
        series_instance_uid=uid("sr/series"),
        sop_instance_uid=uid("sr/instance"),
        contributing_equipment=equipment,
    )
    volume, index, labels = _key_slice(anatomy)
    key_source = headers.require(volume.sop_instance_uids[index])
    objects["keyimage"] = build_key_image(
        key_source,
        volume.array[index],
        labels,
        findings.get("findings") or [],
        discs=findings.get("disc_findings") or [],
        series_instance_uid=uid("keyimage/series"),
        sop_instance_uid=uid("keyimage/instance"),
        contributing_equipment=equipment,
        frame=frame_numbers(key_source, volume, [index])[0] if is_multiframe(key_source) else None,
    )
    objects["ko"] = build_kos(
        objects["keyimage"],
        node_algorithm(models),
        series_instance_uid=uid("ko/series"),
        sop_instance_uid=uid("ko/instance"),
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {name: save_dataset(ds, out_dir / f"{name}.dcm") for name, ds in objects.items()}


def _labels_volume(anatomy: StudyAnatomy) -> Volume:
    volume = anatomy.volumes.get(anatomy.labels_role)
    if volume is None:
        raise ValueError(f"labels are in the grid of {anatomy.labels_role!r}, which has no volume")
    if anatomy.labels is None or anatomy.labels.shape != volume.array.shape:
        shape = None if anatomy.labels is None else anatomy.labels.shape
        raise ValueError(
            f"labels {shape} do not match volume {anatomy.labels_role!r} {volume.array.shape}"
        )
    return volume


def _key_slice(anatomy: StudyAnatomy) -> tuple[Volume, int, np.ndarray | None]:
    """The mid-sagittal slice: the one with the most canal in it, else the middle one."""
    if anatomy.labels is not None:
        volume = _labels_volume(anatomy)
        canal = (anatomy.labels == SPIDER_CANAL).sum(axis=(1, 2))
        foreground = (anatomy.labels > 0).sum(axis=(1, 2))
        score = canal if canal.any() else foreground
        index = int(np.argmax(score)) if score.any() else volume.array.shape[0] // 2
        return volume, index, anatomy.labels[index]
    for role in ("sag_t2", "sag_stir", "sag_t1"):
        if role in anatomy.volumes:
            volume = anatomy.volumes[role]
            return volume, volume.array.shape[0] // 2, None
    raise ValueError(f"no sagittal volume for the key image; have {sorted(anatomy.volumes)}")


def save_dataset(ds: Dataset, path: Path) -> Path:
    """Write-then-rename: a crash never leaves a truncated object for delivery to send."""
    tmp = path.with_name(f".{path.name}.tmp")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
    return path
