"""Every entry point stops on a bad setting with a message naming the variable, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.settings import PROJECT_ROOT

ENTRY_POINTS = {
    "start_worker": [str(PROJECT_ROOT / "start_worker.sh")],
    "api": [sys.executable, "-m", "app"],
    "scheduler": [sys.executable, "-m", "workers.scheduler"],
    "reconcile": [sys.executable, "-m", "workers.reconcile"],
}


@pytest.mark.parametrize("program", sorted(ENTRY_POINTS))
def test_a_bad_setting_stops_start_up_naming_the_variable(program: str) -> None:
    env = os.environ | {"ENV_FILE": "", "RQ_RETRY_MAX": "three", "WORKER_QUEUES": "audio analysis"}
    done = subprocess.run(ENTRY_POINTS[program], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"{program}: invalid configuration:")
    assert "RQ_RETRY_MAX" in done.stderr
    assert "WORKER_QUEUES" in done.stderr
    assert "Traceback" not in done.stderr


def test_start_worker_help_explains_its_options() -> None:
    done = subprocess.run([str(PROJECT_ROOT / "start_worker.sh"), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for option in ("--count", "--queues", "--burst", "WORKER_COUNT", "SIGTERM"):
        assert option in done.stdout
