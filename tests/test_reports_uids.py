"""Deterministic result UIDs: same inputs give the same UID, any change a different one."""

from __future__ import annotations

import pytest
from pydicom.uid import UID

from models.reports.equipment import algorithm_from_models, node_version
from models.reports.uids import model_versions, result_uid

MODELS = {
    "segmentation": {"name": "seg", "version": "1.0", "sha256": "aa"},
    "grader_learned": {"name": "grader", "version": "2.0"},
}


def test_same_inputs_give_the_same_valid_uid():
    versions = model_versions(MODELS)
    first = result_uid("1.2.3", versions, "sr/instance")
    assert first == result_uid("1.2.3", dict(reversed(list(versions.items()))), "sr/instance")
    assert first.startswith("2.25.") and len(first) <= 64 and UID(first).is_valid


def test_study_kind_and_model_version_each_change_the_uid():
    versions = model_versions(MODELS)
    base = result_uid("1.2.3", versions, "sr/instance")
    assert result_uid("1.2.4", versions, "sr/instance") != base
    assert result_uid("1.2.3", versions, "sr/series") != base
    upgraded = model_versions({**MODELS, "segmentation": {"name": "seg", "version": "1.1"}})
    assert result_uid("1.2.3", upgraded, "sr/instance") != base


def test_checksum_alone_does_not_change_the_uid():
    rebuilt = {**MODELS, "segmentation": {**MODELS["segmentation"], "sha256": "bb"}}
    assert result_uid("1.2.3", model_versions(rebuilt), "k") == result_uid(
        "1.2.3", model_versions(MODELS), "k"
    )


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="study_instance_uid"):
        result_uid("", {}, "sr/instance")
    with pytest.raises(ValueError, match="kind"):
        result_uid("1.2.3", {}, "")
    with pytest.raises(ValueError, match="segmentation"):
        model_versions({"segmentation": "1.0"})


def test_algorithm_falls_back_to_the_node_when_a_card_is_missing():
    assert algorithm_from_models(MODELS, "segmentation").version == "1.0"
    fallback = algorithm_from_models(
        {"segmentation": {"name": None, "version": None}}, "segmentation"
    )
    assert fallback.name == "lumbar-node segmentation"
    assert fallback.version == node_version() != "unknown"
    assert algorithm_from_models({}, "segmentation") == fallback
