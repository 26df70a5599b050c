"""The shipped orthanc.json and autoroute.lua, read as files (the routing test runs them)."""

from __future__ import annotations

import json
import re

from deploy_files import DEPLOY

ORTHANC = DEPLOY / "orthanc"


def test_orthanc_json_is_strict_json_declaring_the_node() -> None:
    config = json.loads((ORTHANC / "orthanc.json").read_text())
    settings = config["LumbarNode"]
    node = config["DicomModalities"][settings["Modality"]]
    assert node["AET"] == "LUMBARNODE" and node["Port"] == 11112
    assert node["AllowStore"] is True and node["AllowEcho"] is True
    assert node["AllowMove"] is False and node["AllowGet"] is False
    # Only declared modalities may store: that is what makes the node's declaration matter.
    assert config["DicomAlwaysAllowStore"] is False
    assert settings["RoutedMetadata"] in config["UserMetadata"]
    assert all(v >= 1024 for v in config["UserMetadata"].values())
    assert config["DicomWeb"]["Enable"] is True


def test_no_credentials_in_the_repository() -> None:
    config = json.loads((ORTHANC / "orthanc.json").read_text())
    assert "RegisteredUsers" not in config  # credentials.json, git-ignored, brings them
    assert config["AuthenticationEnabled"] is True
    assert "orthanc/credentials.json" in (DEPLOY / ".gitignore").read_text().splitlines()
    example = json.loads((ORTHANC / "credentials.json.example").read_text())
    assert set(example) == {"RegisteredUsers"}


def test_lua_script_defines_the_routing_callback_and_guards() -> None:
    lua = (ORTHANC / "autoroute.lua").read_text()
    for function in ("OnStableStudy(studyId, tags, metadata)", "IsLumbarText(text)",
                     "IsNodeResult(seriesTags, settings)", "LumbarNodeSettings()"):
        assert f"function {function}" in lua
    assert re.search(r'ResultSeriesPrefix = "AI lumbar"', lua)
    assert 'GetOrthancConfiguration()["LumbarNode"]' in lua


def test_loop_guard_matches_the_result_objects_the_node_writes() -> None:
    """The routing script recognises results by these headers; models/reports sets them."""
    from models.reports import equipment
    from models.reports.keyimage import sop as keyimage_sop
    from models.reports.seg import sop as seg_sop
    from models.reports.sr import sop as sr_sop

    settings = json.loads((ORTHANC / "orthanc.json").read_text())["LumbarNode"]
    assert equipment.MANUFACTURER.upper() == settings["ResultManufacturer"].upper()
    prefix = settings["ResultSeriesPrefix"].upper()
    for description in (seg_sop.SERIES_DESCRIPTION, sr_sop.SERIES_DESCRIPTION,
                        keyimage_sop.SERIES_DESCRIPTION, keyimage_sop.KOS_SERIES_DESCRIPTION):
        assert description.upper().startswith(prefix), description
