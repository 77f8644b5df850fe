"""The container health check against a real Redis and a real worker pool (`python -m workers.healthcheck`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from core.settings import Settings
from tests.support.processes import ManagedProcess, settings_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.one_database]


def _healthcheck(settings: Settings, role: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.healthcheck", role],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_worker_check_follows_a_real_worker_pool_from_start_to_warm_shutdown(
    settings: Settings, workers: Callable[..., ManagedProcess]
) -> None:
    before = _healthcheck(settings, "worker")
    pool = workers(settings)
    wait_for(lambda: _healthcheck(settings, "worker").returncode == 0, 60, "the worker check to pass")
    assert pool.stop() == 0
    after = _healthcheck(settings, "worker")

    assert before.returncode == 1
    assert "no RQ worker of host" in before.stderr
    assert after.returncode == 1


def test_an_unreachable_redis_is_unhealthy_not_a_traceback(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    result = _healthcheck(down, "scheduler")
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy: Redis:")
