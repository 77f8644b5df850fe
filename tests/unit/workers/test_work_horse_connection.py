"""A forking worker's jobs use the worker's own Redis client: its work-horse connects to Redis once, not
once for RQ and once for the job layer (a connection, a HELLO and a health-check PING per job)."""

from __future__ import annotations

import fakeredis
import pytest

import jobs.runtime
from core.settings import Settings
from jobs.runtime import get_runtime
from workers.worker import KitWorker

pytestmark = pytest.mark.one_database


def test_a_forking_workers_jobs_share_its_redis_client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs.runtime, "_built", None)
    monkeypatch.setattr(jobs.runtime, "get_settings", lambda: settings)
    built_before = get_runtime()
    worker = KitWorker(["audio_analysis"], connection=fakeredis.FakeRedis())

    worker.work(burst=True)  # no job: nothing forked; shared once, when it starts

    runtime = get_runtime()
    assert runtime.redis is worker.connection
    assert runtime.database is built_before.database  # the engine (and its warm-up) is kept
    assert runtime.settings is settings
