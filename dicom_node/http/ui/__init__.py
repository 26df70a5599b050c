"""The review console under /ui/: radiologists confirm or correct findings, admins see the
node. One router per concern; `console_router` joins them for `create_app`."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import NodeConfig


def console_router(config: NodeConfig, sessions: sessionmaker[Session]) -> APIRouter:
    from dicom_node.http.ui import admin, agreement, login, review, worklist
    from dicom_node.http.ui.common import Console

    console = Console(config, sessions)
    api = APIRouter()
    for module in (login, worklist, review, admin, agreement):
        api.include_router(module.router(console))

    @api.get("/ui/static/console.css", include_in_schema=False)
    def stylesheet() -> Response:
        from importlib.resources import files

        css = files("dicom_node.http.ui").joinpath("templates/console.css").read_text()
        return Response(css, media_type="text/css",
                        headers={"Cache-Control": "max-age=3600"})

    return api
