"""The README's limits example, run as written: `python -m examples.limits.demo submit`, two workers in
burst mode, then `report` — against a real Redis and real worker processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from core.settings import PROJECT_ROOT, Settings
from tests.support.processes import ManagedProcess, settings_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.one_database]

TASK_MODULES = "tasks.audio_analysis,tasks.waveform,examples.limits.tasks"


def _demo(settings: Settings, command: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "examples.limits.demo", command],
        cwd=PROJECT_ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()


def test_the_limits_example_runs_as_the_readme_shows(
    make_settings: Callable[..., Settings], workers: Callable[..., ManagedProcess]
) -> None:
    settings = make_settings(task_modules=TASK_MODULES)
    submitted = [line.split(" ", 4) for line in _demo(settings, "submit")]
    assert [(task, key, status) for _, task, key, status, _ in submitted] == [
        *[("examples.limits.exclusive", "-", "queued")] * 3,
        *[("examples.limits.per_customer", "customer-42", "queued")] * 3,
    ]
    logs = [log for *_, log in submitted]
    assert logs[0].startswith("queued")
    assert logs[3].startswith("queued")
    assert logs[1] == logs[2] == "waiting for a slot: at most 1 job(s) of this task run at once"
    for waiting, previous in ((4, 3), (5, 4)):  # each keyed job waits for the one before it
        assert logs[waiting].startswith(f"waiting for job {submitted[previous][0]}"), logs[waiting]
        assert logs[waiting].endswith("(same ordering key)")

    pool = workers(settings, "-n", "2", "--burst")
    wait_for(lambda: pool.process.poll() is not None, 120, "the burst workers to drain the queues")
    assert pool.process.returncode == 0
    assert _demo(settings, "report") == [
        "peak exclusive: 1 | peak customer-42: 1 | customer-42 finished in order: ['c0', 'c1', 'c2']"
    ]
