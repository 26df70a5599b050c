"""How the node serves the OHIF build: rebased under /viewer/ (and under a public URL's
path), an app-config.js pointing at the node's own /dicomweb, clear answers when the
viewer is not configured, and metadata links that follow the public URL."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))
from nodekit import write_study
from viewerkit import OHIF_DIR, TOKEN, config_for

from dicom_node.db.session import make_engine, make_sessionmaker
from dicom_node.http.app import create_app
from dicom_node.http.multipart import build

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _client(tmp_path: Path, **changes: object) -> TestClient:
    config = config_for(tmp_path / "node", **changes)
    sessions = make_sessionmaker(make_engine(config.db_url))
    return TestClient(create_app(config, sessions), base_url="http://node.test:8080")


@pytest.fixture(scope="module")
def ohif() -> Path:
    if not (OHIF_DIR / "index.html").is_file():
        pytest.fail(f"OHIF is missing from {OHIF_DIR}: run scripts/bootstrap.sh")
    return OHIF_DIR


def test_index_and_bundles_are_rebased_under_viewer(ohif, tmp_path):
    client = _client(tmp_path)
    index = client.get("/viewer/")
    assert index.status_code == 200 and index.headers["cache-control"] == "no-store"
    assert 'window.PUBLIC_URL="/viewer/"' in index.text
    assert 'src="/app-config.js"' not in index.text and 'src="/viewer/app-config.js"' in index.text
    bundle = next(ohif.glob("app.bundle.*.js")).name
    assert f'src="/viewer/{bundle}"' in index.text
    js = client.get(f"/viewer/{bundle}")
    assert js.status_code == 200 and '__webpack_require__.p = "/viewer/"' in js.text
    css = client.get("/viewer/app.bundle.css")
    assert "url(/viewer/" in css.text and "url(/a" not in css.text
    # a client-side route of the viewer is the app itself; a missing asset is 404
    assert client.get("/viewer/viewer?StudyInstanceUIDs=1.2.3").text == index.text
    assert client.get("/viewer/nothing-here.js").status_code == 404
    assert client.get("/viewer/%2e%2e/%2e%2e/pyproject.toml").status_code == 404
    assert client.get("/viewer", follow_redirects=False).headers["location"] == "/viewer/"


def test_app_config_points_at_the_nodes_own_dicomweb(ohif, tmp_path):
    config = _client(tmp_path).get("/viewer/app-config.js")
    assert config.status_code == 200
    assert '"qidoRoot": "http://node.test:8080/dicomweb"' in config.text
    assert '"wadoRoot": "http://node.test:8080/dicomweb"' in config.text
    assert '"routerBasename": "/viewer"' in config.text
    assert "cloudfront" not in config.text and "dicomlocal" not in config.text


def test_behind_a_proxy_everything_follows_the_public_url(ohif, tmp_path):
    client = _client(tmp_path, public_base_url="https://pacs.example.org/lumbar")
    config = client.get("/viewer/app-config.js").text
    assert '"qidoRoot": "https://pacs.example.org/lumbar/dicomweb"' in config
    assert '"routerBasename": "/lumbar/viewer"' in config
    assert 'window.PUBLIC_URL="/lumbar/viewer/"' in client.get("/viewer/").text
    # the metadata's BulkDataURIs, which the viewer follows for pixels, use it too
    study_uid, files = write_study(tmp_path / "study", n=2)
    body, ctype = build([f.read_bytes() for f in files], "application/dicom")
    stored = client.post("/dicomweb/studies", content=body,
                         headers={**AUTH, "Content-Type": ctype})
    assert stored.status_code == 200, stored.text
    metadata = client.get(f"/dicomweb/studies/{study_uid}/metadata", headers=AUTH).json()
    uris = [item["7FE00010"]["BulkDataURI"] for item in metadata if "7FE00010" in item]
    assert uris and all(u.startswith("https://pacs.example.org/lumbar/dicomweb/studies/")
                        for u in uris)


def test_without_a_viewer_folder_the_viewer_says_so(tmp_path):
    client = _client(tmp_path, viewer_dir=None)
    answer = client.get("/viewer/")
    assert answer.status_code == 404 and "LUMBAR_NODE_VIEWER_DIR" in answer.text
    empty = tmp_path / "empty"
    empty.mkdir()
    answer = _client(tmp_path / "b", viewer_dir=str(empty)).get("/viewer/")
    assert answer.status_code == 503 and "bootstrap" in answer.text
