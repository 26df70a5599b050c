"""deploy/'s reverse proxy: one origin for the pinned OHIF build, the node's DICOMweb and the
review console, so the viewer authenticates with the console's session cookie."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploy_files import DEPLOY, load_compose, read_env_file
from viewerkit import OHIF_VERSION

from dicom_node.config import load_config
from dicom_node.http.viewer import OHIF_VERSION as SERVED_VERSION

REPO = Path(__file__).resolve().parents[2]


def test_proxy_serves_the_pinned_build_and_forwards_to_the_node():
    compose = load_compose(read_env_file(DEPLOY / "env.example"))
    proxy = compose["services"]["proxy"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    assert mounts["/usr/share/ohif"] == f"../.cache/ohif/{OHIF_VERSION}"
    assert OHIF_VERSION == SERVED_VERSION
    bootstrap = (REPO / "scripts" / "bootstrap.sh").read_text()
    assert f"OHIF_VERSION={OHIF_VERSION}" in bootstrap and "npm pack" in bootstrap
    assert ".cache/ohif/$OHIF_VERSION" in bootstrap
    for target in ("/etc/nginx/conf.d/default.conf", "/etc/nginx/ohif/app-config.js"):
        assert (DEPLOY / mounts[target].removeprefix("./")).is_file()
    conf = (DEPLOY / "proxy" / "nginx.conf").read_text()
    listen = re.search(r"listen (\d+);", conf).group(1)
    assert any(str(p).endswith(f":{listen}") for p in proxy["ports"])
    assert re.search(r"location ~ \^/\(dicomweb\|ui\)/ \{\s+proxy_pass http://node:8080;", conf)
    assert "try_files $uri /index.html" in conf
    # the node builds its links on the URL radiologists open: the proxy's
    node = load_config(env={k: str(v) for k, v in
                            compose["services"]["node"]["environment"].items()})
    assert node.public_base_url.endswith(f":{listen}")


def test_proxy_app_config_reads_only_the_nodes_dicomweb_on_this_origin():
    config = (DEPLOY / "proxy" / "app-config.js").read_text()
    roots = re.findall(r"(qidoRoot|wadoRoot|wadoUriRoot): (.+),", config)
    assert {value for _, value in roots} == {"window.location.origin + '/dicomweb'"}
    assert len(roots) == 3
    assert "dicomlocal" not in config and "dangerouslyUseDynamicConfig" not in config
