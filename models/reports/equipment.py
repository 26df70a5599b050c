"""Who made the result objects: the node as manufacturer, its models as algorithms.

IHE AI Results asks every AI object to name the algorithm in ContributingEquipmentSequence;
SEG additionally carries it per segment (AlgorithmIdentificationSequence) and the SR as the
device observer. All three are built from the same model cards of ``findings["models"]``.

Model names and versions can be longer than the 64 characters of an LO attribute
(ManufacturerModelName, SoftwareVersions, AlgorithmName). Cutting them there could make two
models look the same, so an LO gets :func:`short_lo` (a prefix plus a hash of the whole
text: deterministic and distinct), while the full text goes where the VR holds it: the
ContributionDescription (ST) and every SR TEXT item (Device Observer Name, Algorithm Name).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from models.reports.uids import model_versions, result_uid

MANUFACTURER = "lumbar-node"
#: Purpose of reference of the contributing algorithm. CID 7005 has no "Processing
#: Algorithm" concept; "Processing Equipment" (DCM 109102) is the one that fits an
#: algorithm deriving new objects from the images.
PURPOSE_PROCESSING = codes.DCM.ProcessingEquipment
#: Order in which model cards are listed wherever one string names all of them.
MODEL_ROLES = ("segmentation", "grader_learned", "grader_measurement")
#: Longest value of an LO attribute
LO_MAX = 64


def short_lo(text: str) -> str:
    """``text`` when it fits an LO, else its first 55 characters, "~" and 8 hex digits of
    its SHA-1: the same text always gives the same value, different texts different ones."""
    if len(text) <= LO_MAX:
        return text
    return f"{text[: LO_MAX - 9]}~{hashlib.sha1(text.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Algorithm:
    """One model card: what a viewer shows as the algorithm that made an object."""

    name: str
    version: str

    def __post_init__(self) -> None:
        if not self.name or not self.version:
            raise ValueError(f"algorithm needs a name and a version, got {self!r}")

    def identification(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=short_lo(self.name),
            version=short_lo(self.version),
            family=codes.DCM.ArtificialIntelligence,
        )


def algorithm_from_models(models: Mapping[str, Mapping[str, object]], role: str) -> Algorithm:
    """The model card of ``role`` (e.g. ``"segmentation"``) as an :class:`Algorithm`.

    A missing card, name or version falls back to the node itself (``lumbar-node <role>``
    at the installed package version) so that the object still names what made it.
    """
    card = models.get(role, {})
    if not isinstance(card, Mapping):
        raise ValueError(f"model card of {role!r} must be a mapping, got {card!r}")
    return Algorithm(
        name=str(card.get("name") or f"{MANUFACTURER} {role}"),
        version=str(card.get("version") or node_version()),
    )


def node_version() -> str:
    try:
        return metadata.version("lumbar-node")
    except metadata.PackageNotFoundError:
        return "unknown"


def node_algorithm(models: Mapping[str, Mapping[str, object]]) -> Algorithm:
    """The whole pipeline as one algorithm: name lists the models, version their versions."""
    versions = model_versions(models)
    if not versions:
        raise ValueError("findings['models'] is empty: results need the model cards that made them")
    roles = [r for r in MODEL_ROLES if r in versions] + sorted(set(versions) - set(MODEL_ROLES))
    return Algorithm(
        name=f"{MANUFACTURER} lumbar stenosis", version=";".join(versions[r] for r in roles)
    )


def contributing_equipment(
    models: Mapping[str, Mapping[str, object]], study_instance_uid: str
) -> list[hd.ContributingEquipment]:
    """One ContributingEquipmentSequence item per model card, each with its device UID; the
    description (ST, 1024 characters) names the model in full."""
    versions = model_versions(models)
    items: list[hd.ContributingEquipment] = []
    for role in sorted(versions):
        algorithm = algorithm_from_models(models, role)
        item = hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=PURPOSE_PROCESSING,
            manufacturer_model_name=short_lo(algorithm.name),
            software_versions=short_lo(algorithm.version),
            contribution_description=f"{role} model: {algorithm.name} {algorithm.version}"[:1024],
        )
        item.DeviceUID = device_uid(algorithm)
        items.append(item)
    return items


def device_uid(algorithm: Algorithm) -> str:
    """A stable DeviceUID per model version (independent of the study)."""
    return result_uid("device", {algorithm.name: algorithm.version}, "device")


def device_observer(algorithm: Algorithm) -> hd.sr.ObserverContext:
    """Device observer context; its name and model name are TEXT items, so nothing is cut."""
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(algorithm),
            name=algorithm.name,
            manufacturer_name=MANUFACTURER,
            model_name=algorithm.version,
        ),
    )


#: Patient and study attributes copied from the source so that results join the study.
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy the Patient and General Study modules' attributes present in ``source``."""
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            setattr(target, keyword, source[keyword].value)
