"""The `/rq` mount of rq-dashboard (`app.dashboard`), built on its first request.

Flask, Jinja, Werkzeug and rq-dashboard cost about a fifth of a second of CPU to import and set up:
an API process loads them once somebody opens the dashboard, not at every start (most API processes
never serve it). The first request builds it in a thread, so the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import threading
from typing import Any, cast

import anyio.to_thread
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from core.settings import Settings

MOUNT_PATH = "/rq"


class DashboardMount:
    """An ASGI app that builds the guarded dashboard on its first request, then hands every request to it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._app: ASGIApp | None = None
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is None:
            app = await anyio.to_thread.run_sync(self._build)
        await app(scope, receive, send)

    def _build(self) -> ASGIApp:
        with self._lock:  # two first requests at once build it once
            if self._app is None:
                from a2wsgi import WSGIMiddleware

                from app.dashboard import build_dashboard

                # a2wsgi types WSGI/ASGI with its own TypedDicts; they are the same protocols as wsgiref's and
                # Starlette's.
                self._app = cast(ASGIApp, WSGIMiddleware(cast(Any, build_dashboard(self._settings))))
            return self._app


def mount_dashboard(app: FastAPI, settings: Settings) -> None:
    """Mounts rq-dashboard at `/rq`, behind the admin key."""
    app.mount(MOUNT_PATH, DashboardMount(settings), name="rq-dashboard")
