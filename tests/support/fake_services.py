"""A scriptable external analysis server and callback receiver, on loopback, for fault tests.

Jobs analyse through it (`ANALYSIS_SERVER_URL`), so a test decides how long a
run takes, when it fails, and can hold runs mid-flight; the callback receiver
counts deliveries per analysis, which is how duplicated effects are counted.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

import anyio.to_thread
import psutil
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devserver.ports import free_port
from tests.support.processes import wait_for

_STORED_NAME = re.compile(rb'filename="([0-9a-f]{32})\.[a-z0-9]+"')


@dataclass
class Script:
    """How the analysis server behaves; tests change it while jobs run."""

    delay_s: float = 0.0
    fail_first: int = 0  # answer 500 to the first N requests for each analysis
    always_fail: bool = False
    poison: set[str] = field(default_factory=set)  # analyses whose every request fails
    slow_first_s: float = 0.0  # the first request for each analysis takes this long (then delay_s)
    hold: threading.Event = field(default_factory=threading.Event)  # while clear, requests wait

    def __post_init__(self) -> None:
        self.hold.set()


class FakeServices:
    """The fake analysis server (`/analyze`) and callback receiver (`/callback`)."""

    def __init__(self) -> None:
        self.script = Script()
        self.requests: Counter[str] = Counter()
        self.callbacks: Counter[str] = Counter()
        self.callback_requests: list[tuple[dict[str, str], bytes]] = []  # (headers, body) as received
        self.in_flight: dict[str, int] = {}  # analysis id -> client port of the run doing it
        self._lock = threading.Lock()
        self.port = free_port()
        app = Starlette(
            routes=[
                Route("/analyze", self._analyze, methods=["POST"]),
                Route("/callback", self._callback, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-services", daemon=True)

    @property
    def analyze_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/analyze"

    @property
    def callback_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    def start(self) -> FakeServices:
        self._thread.start()
        wait_for(lambda: self._server.started, 10, "the fake analysis server")
        return self

    def stop(self) -> None:
        self.script.hold.set()
        self._server.should_exit = True
        # Without waiting for requests still in flight: a hanging analysis (`slow_first_s`) whose worker
        # was killed would hold the server (and the test's teardown) until its sleep ends.
        self._server.force_exit = True
        self._thread.join(10)

    async def _analyze(self, request: Request) -> JSONResponse:
        body = await request.body()
        match = _STORED_NAME.search(body)
        analysis_id = match.group(1).decode() if match else "unknown"
        with self._lock:
            self.requests[analysis_id] += 1
            nth = self.requests[analysis_id]
            self.in_flight[analysis_id] = request.client.port if request.client else 0
        try:
            script = self.script
            await anyio.to_thread.run_sync(script.hold.wait)
            await asyncio.sleep(script.slow_first_s if nth == 1 and script.slow_first_s else script.delay_s)
            if script.always_fail or analysis_id in script.poison or nth <= script.fail_first:
                return JSONResponse({"error": "analysis backend overloaded"}, status_code=500)
            return JSONResponse({"engine": "fake", "bytes": len(body), "request": nth})
        finally:
            with self._lock:
                self.in_flight.pop(analysis_id, None)

    async def _callback(self, request: Request) -> JSONResponse:
        body = await request.body()
        payload = json.loads(body)
        with self._lock:
            self.callbacks[str(payload.get("id"))] += 1
            self.callback_requests.append((dict(request.headers), body))
        return JSONResponse({"ok": True})

    def runner_pids(self) -> dict[str, int]:
        """Analysis id -> PID of the process running it now (a work-horse, or the API in-process)."""
        with self._lock:
            ports = {port: analysis_id for analysis_id, port in self.in_flight.items()}
        pids = {}
        for connection in psutil.net_connections(kind="tcp"):
            ours = connection.raddr and connection.raddr.port == self.port
            if ours and connection.laddr and connection.laddr.port in ports and connection.pid:
                pids[ports[connection.laddr.port]] = connection.pid
        return pids
