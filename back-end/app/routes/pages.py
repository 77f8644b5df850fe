"""Pages for people: the upload page at `/`, the admin view at `/admin`, their scripts and styles at `/static`.

Plain HTML, CSS and JavaScript modules from `app/static`, no build step. The pages
load nothing from elsewhere and run no inline script: their Content-Security-Policy
allows this origin's files only, so markup that slipped into a file name or a log
line could not run even if the scripts (which build the DOM with `textContent`)
ever inserted it as HTML.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PATH = "/static"
# 'self' only: no inline script or style, no eval, nothing from other origins. `blob:` images are the
# waveform PNGs the page has fetched itself; `connect-src 'self'` covers fetch() and EventSource.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# The pages are small and change with the server: browsers check back each time (a 304 when unchanged).
REVALIDATE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS | REVALIDATE)


@router.get("/")
def upload_page() -> FileResponse:
    """The upload page: drop files, follow each analysis live, see its result and waveform."""
    return _page("index.html")


@router.get("/admin")
def admin_page() -> FileResponse:
    """The admin view: jobs per task and status, the job list with filters, a job's live logs."""
    return _page("admin.html")


class _StaticFiles(StaticFiles):
    """Starlette's StaticFiles with the pages' security headers, revalidated on each use."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS | REVALIDATE)
        return response


def install_pages(app: FastAPI) -> None:
    """Serves the pages and their files."""
    app.include_router(router)
    app.mount(STATIC_PATH, _StaticFiles(directory=STATIC_DIR), name="static")
