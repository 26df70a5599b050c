"""The OHIF viewer, served same-origin under ``/viewer/`` from the pinned build.

Same origin matters for authentication: the viewer's DICOMweb requests then carry the
console's session cookie (``lumbar_session``, SameSite=Strict), which the DICOMweb routes
accept for reading, so a radiologist who signed in at ``/ui/login`` opens studies with no
token in the browser. OHIF has no way to send a static bearer token of its own.

The OHIF build on npm is built for the root of a site (``PUBLIC_URL="/"``, webpack's public
path ``"/"``, CSS fonts at ``url(/…)``). Rather than unpacking a second, rebuilt copy, the
router rewrites those few root-relative references to ``<prefix>/viewer/`` as it serves
them, where ``<prefix>`` is the path of the node's public URL (PUBLIC_BASE_URL, or a
trusted X-Forwarded-Prefix). ``app-config.js`` is generated: its one data source is the
node's own ``/dicomweb`` under that public URL.

Nothing here is fetched at run time: ``scripts/bootstrap.sh`` unpacks the pinned build
into ``.cache/ohif/<version>/`` at install time, and LUMBAR_NODE_VIEWER_DIR points at it.
"""

from __future__ import annotations

import json
import mimetypes
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from dicom_node.config import NodeConfig

#: the OHIF release the node is tested with (scripts/bootstrap.sh fetches exactly this)
OHIF_VERSION = "3.13.2"
#: root-relative references of the build, rewritten to the viewer's own path
_JS_PUBLIC_PATH = b'__webpack_require__.p = "/"'
_CSS_ROOT_URL = b"url(/"
_NO_STORE = {"Cache-Control": "no-store"}


def viewer_router(config: NodeConfig) -> APIRouter:
    """Routes under /viewer; without VIEWER_DIR they answer 404 with the reason."""
    router = APIRouter()
    root = Path(config.viewer_dir).resolve() if config.viewer_dir else None

    def build() -> Path:
        if root is None:
            raise HTTPException(404, "the viewer is not configured (LUMBAR_NODE_VIEWER_DIR)")
        if not (root / "index.html").is_file():
            raise HTTPException(503, f"no OHIF build in {root}: run scripts/bootstrap.sh")
        return root

    def paths(request: Request) -> tuple[str, str]:
        """(public root URL, path of /viewer/ on it) for this request."""
        from dicom_node.http.app import public_root  # app includes this router

        try:
            public = public_root(config, request)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return public, urlsplit(public).path.rstrip("/") + "/viewer/"

    @router.get("/viewer", include_in_schema=False)
    def viewer_root(request: Request) -> RedirectResponse:
        build()
        return RedirectResponse(paths(request)[1], status_code=308)

    @router.get("/viewer/app-config.js", include_in_schema=False)
    def app_config(request: Request) -> Response:
        build()
        public, base = paths(request)
        return Response(app_config_js(public + "/dicomweb", base),
                        media_type="application/javascript", headers=_NO_STORE)

    @router.get("/viewer/{path:path}", include_in_schema=False)
    def asset(path: str, request: Request) -> Response:
        folder = build()
        target = (folder / path).resolve() if path else folder / "index.html"
        if not target.is_relative_to(folder):
            raise HTTPException(404, "not found")
        if not target.is_file():
            if "." in Path(path).name:  # a missing asset, not a client-side route
                raise HTTPException(404, "not found")
            target = folder / "index.html"  # the viewer's own routes (/viewer/viewer?...)
        base = paths(request)[1]
        if target.name == "index.html":
            return Response(index_html(target, base), media_type="text/html",
                            headers=_NO_STORE)
        if target.suffix in (".js", ".css"):
            body = _rebased(str(target), target.stat().st_mtime_ns, base)
            if body is not None:
                media = "application/javascript" if target.suffix == ".js" else "text/css"
                return Response(body, media_type=media)
        media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".wasm":
            media = "application/wasm"
        return FileResponse(target, media_type=media)

    return router


def index_html(path: Path, base: str) -> bytes:
    """The build's index.html with every root-relative link under ``base``."""
    text = path.read_text(encoding="utf-8")
    text = text.replace('window.PUBLIC_URL="/"', f"window.PUBLIC_URL={json.dumps(base)}")
    for attribute in ("href", "src"):
        text = text.replace(f'{attribute}="/', f'{attribute}="{base}')
    return text.encode()


@lru_cache(maxsize=16)
def _rebased(path: str, _mtime_ns: int, base: str) -> bytes | None:
    """A JS or CSS file with its root-relative public path moved to ``base``; None when it
    has none (then the file is served as it is)."""
    data = Path(path).read_bytes()
    if path.endswith(".js") and _JS_PUBLIC_PATH in data:
        return data.replace(_JS_PUBLIC_PATH, f'__webpack_require__.p = "{base}"'.encode())
    if path.endswith(".css") and _CSS_ROOT_URL in data:
        return data.replace(_CSS_ROOT_URL, f"url({base}".encode())
    return None


def app_config_js(dicomweb_root: str, base: str) -> str:
    """OHIF's ``window.config``: one DICOMweb source, the node's own, nothing else.

    No local-file, ``?url=`` or dynamic-config sources (OHIF's secure defaults); QIDO-RS
    include fields and wildcards as the node supports them (docs/conformance.md); no
    fuzzy matching, which the node answers with a warning rather than applies.
    """
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "lumbar-node",
        "configuration": {
            "friendlyName": "lumbar-node",
            "name": "lumbar-node",
            "wadoUriRoot": dicomweb_root,
            "qidoRoot": dicomweb_root,
            "wadoRoot": dicomweb_root,
            "qidoSupportsIncludeField": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "name": "lumbar-node",
        "routerBasename": base.rstrip("/") or "/",
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "always",
        "defaultDataSourceName": "lumbar-node",
        "dataSources": [source],
    }
    return (f"/* generated by lumbar-node for OHIF {OHIF_VERSION} */\n"
            f"window.config = {json.dumps(config, indent=2)};\n")


__all__ = ["OHIF_VERSION", "app_config_js", "viewer_router"]
