"""Liveness and readiness of a whole deployment on RQ: API, workers and scheduler as real processes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from core.settings import Settings
from jobs.reconcile_status import LAST_RUN_KEY
from tests.conftest import SettingsFactory
from tests.support.processes import ApiServer, ManagedProcess, settings_env, wait_for

# Readiness names Redis, the workers and the reconciler here (its failure is recorded in Redis); the
# database's own check is covered on each database by tests/unit/app/test_health.py.
pytestmark = [pytest.mark.slow, pytest.mark.one_database]

# The reconciler runs every second (rq-scheduler looks every 5 s), so it counts as late after 15 s.
FAST: dict[str, Any] = {"reconcile_interval_s": 1, "worker_ttl_s": 20}


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Callable[[Settings], ManagedProcess]]:
    """Starts `python -m workers.scheduler` (rq-scheduler: it schedules the reconciler); stopped after the test."""
    started: list[ManagedProcess] = []

    def start(settings: Settings) -> ManagedProcess:
        argv = [sys.executable, "-m", "workers.scheduler"]
        process = ManagedProcess(argv, settings_env(settings), tmp_path / f"scheduler-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


class Probe:
    """Polls a readiness endpoint, keeping the last answer for the failure message."""

    def __init__(self, client: httpx.Client, path: str = "/health/ready") -> None:
        self.client = client
        self.path = path
        self.last: httpx.Response | None = None

    def until(
        self,
        accept: Callable[[httpx.Response], bool],
        timeout_s: float,
        what: str,
        before: Callable[[], None] = lambda: None,
    ) -> httpx.Response:
        def check() -> httpx.Response | None:
            before()
            self.last = self.client.get(self.path)
            return self.last if accept(self.last) else None

        try:
            return wait_for(check, timeout_s, what, interval_s=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer: {self.last and self.last.text}") from None


def _all_ok(response: httpx.Response) -> bool:
    return response.status_code == 200


class Filler:
    """Fills Redis with keys until it refuses a write for lack of memory (`maxmemory`, `noeviction`)."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection
        self.written = 0

    def fill(self, value_bytes: int) -> None:
        """Writes values of `value_bytes` until one is refused (a refused value's buffer is freed after)."""
        for _ in range(100_000):
            try:
                self.connection.set(f"test:filler:{self.written}", b"x" * value_bytes)
            except redis.exceptions.OutOfMemoryError:
                return
            self.written += 1
        raise AssertionError("Redis never ran out of memory")

    def to_the_brim(self) -> None:
        """Big values first, then tiny ones, so that even a small write is refused now."""
        self.fill(64 * 1024)
        self.fill(16)

    def empty(self) -> None:
        for start in range(0, self.written, 1000):
            self.connection.delete(*[f"test:filler:{index}" for index in range(start, min(start + 1000, self.written))])


def test_ready_is_200_when_all_runs_and_503_naming_redis_when_redis_is_out_of_memory_while_live_stays_200(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
    scheduler: Callable[[Settings], ManagedProcess],
    redis_conn: redis.Redis,
) -> None:
    settings = make_settings(**FAST)
    api = api_server(settings)
    workers(settings)
    scheduler(settings)
    with api.client() as client:
        probe = Probe(client)
        wait_for(lambda: redis_conn.hget(LAST_RUN_KEY, "succeeded_at"), 60, "the reconciler's first pass")
        fine = probe.until(_all_ok, 60, "ready")
        legacy = client.get("/health")

        used = int(redis_conn.info("memory")["used_memory"])
        redis_conn.config_set("maxmemory", used + 2 * 1024 * 1024)  # just above what is used now
        filler = Filler(redis_conn)
        try:
            filler.to_the_brim()
            # Before each probe, take up again whatever was freed since (e.g. expired heartbeats).
            full = probe.until(
                lambda r: "redis" in r.json()["problems"], 30, "ready to name redis", before=lambda: filler.fill(16)
            )
            live = client.get("/health/live")
        finally:
            redis_conn.config_set("maxmemory", 0)
            filler.empty()
        recovered = probe.until(_all_ok, 90, "ready again once Redis has memory")

    assert fine.json()["mode"] == "rq"
    assert fine.json()["checks"] == {
        "database": "ok",
        "redis": "ok",
        "workers": "ok",
        "scheduler": "ok",
        "reconciler": "ok",
        "stuck_jobs": [],
    }
    assert (legacy.status_code, legacy.json()["checks"]) == (200, fine.json()["checks"])
    assert full.status_code == 503
    assert full.json()["status"] == "unhealthy"
    assert "not writable" in full.json()["checks"]["redis"]
    assert "maxmemory" in full.json()["checks"]["redis"]
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert recovered.json()["problems"] == []


def test_a_reconciler_failing_every_pass_makes_ready_503_naming_it(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
    scheduler: Callable[[Settings], ManagedProcess],
    tmp_path: Path,
) -> None:
    settings = make_settings(**FAST)
    api = api_server(settings)
    # The workers (which run the reconciler in RQ mode) were deployed with another DATABASE_URL:
    # a database without the schema. The API, its database and the queues are all fine.
    workers(settings, DATABASE_URL=f"sqlite:///{tmp_path / 'elsewhere.db'}")
    scheduler(settings)
    with api.client() as client:
        probe = Probe(client)
        broken = probe.until(lambda r: r.json()["problems"] == ["reconciler"], 90, "ready to name only the reconciler")
        legacy = client.get("/health")
        live = client.get("/health/live")

    assert broken.status_code == 503
    reason = broken.json()["checks"]["reconciler"]
    assert reason.startswith("no successful pass recorded (expected every 1 s); last pass failed")
    assert "no such table: jobs" in reason
    assert (legacy.status_code, legacy.json()["problems"]) == (503, ["reconciler"])
    assert live.status_code == 200
