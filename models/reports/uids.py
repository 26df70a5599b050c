"""Deterministic UIDs for result objects.

A worker that crashes after sending half of its results re-runs the study. If the re-run
minted fresh UIDs, the PACS would store a second copy of every object; deriving the UIDs
from what determines the content (study, model versions, object kind) makes it overwrite
instead. A model upgrade changes the UIDs, so results of different models never collide.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

#: Namespace of the name-based UUIDs behind every result UID (fixed forever: changing it
#: would change every UID the node has ever sent).
_NAMESPACE = uuid.UUID("6f1c1a0e-4d9b-5c1e-9a57-2b8e3c4d5f60")


def model_versions(models: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """``findings["models"]`` reduced to ``{role: "name@version"}``.

    Only name and version enter the UIDs: a checksum changes with every re-export of the
    same weights, which must not turn a re-run into a new set of objects.
    """
    versions: dict[str, str] = {}
    for role, card in models.items():
        if not isinstance(card, Mapping):
            raise ValueError(f"model card of {role!r} must be a mapping, got {card!r}")
        versions[str(role)] = f"{card.get('name') or ''}@{card.get('version') or ''}"
    return versions


def result_uid(study_instance_uid: str, versions: Mapping[str, str], kind: str) -> str:
    """A ``2.25`` UID (ISO/IEC 9834-8, name-based UUID) for one result object or series.

    ``kind`` names the object, e.g. ``"sr/instance"``, ``"seg/sag_t2/series"`` or
    ``"tracking/left_neural_foraminal_narrowing_l4_l5"``.
    """
    if not study_instance_uid or not isinstance(study_instance_uid, str):
        raise ValueError(
            f"study_instance_uid must be a non-empty string, got {study_instance_uid!r}"
        )
    if not kind:
        raise ValueError("kind must be a non-empty string")
    name = json.dumps(
        {"study": study_instance_uid, "models": dict(sorted(versions.items())), "kind": kind},
        sort_keys=True,
    )
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"
