"""Static files (``/static``, ``/pages``) with content types of our own.

Starlette asks :mod:`mimetypes`, which reads the machine's ``/etc/mime.types``: there ``.ts`` may
be ``text/vnd.trolltech.linguist`` (Qt translations) or ``video/mp2t``, so ``tidings.d.ts`` came
out as whatever the host said. The files shipped here have fixed types; only others are guessed.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles as _StaticFiles

__all__ = ["MEDIA_TYPES", "StaticFiles", "media_type_of"]

#: By the end of the file name, longest first where one ends another (``.d.ts`` before ``.ts``).
MEDIA_TYPES: dict[str, str] = {
    ".d.ts": "text/plain; charset=utf-8",  # TypeScript has no registered type; readable as text
    ".ts": "text/plain; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def media_type_of(path: str) -> str | None:
    """The fixed content type of ``path``, or None to let Starlette guess."""
    name = os.path.basename(path).lower()
    for suffix, media_type in MEDIA_TYPES.items():
        if name.endswith(suffix):
            return media_type
    return None


class StaticFiles(_StaticFiles):
    """Starlette's, with :data:`MEDIA_TYPES` (both engines serve these through the ASGI app).

    ``cross_origin``: any origin may read the files (``Access-Control-Allow-Origin: *``), as
    from a CDN: an application's page imports ``tidings.js`` from the tidings server, and a
    module script of another origin loads only with that header. For public files only (no
    credentials are involved)."""

    def __init__(self, *, cross_origin: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cross_origin = cross_origin

    def file_response(
        self, full_path: Any, stat_result: os.stat_result, scope: Any, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media_type = media_type_of(str(full_path))
        if media_type is not None and isinstance(response, FileResponse):
            response.media_type = media_type
            response.headers["content-type"] = media_type
        if self.cross_origin:
            response.headers["access-control-allow-origin"] = "*"
        return response
