"""The reconciler runs as a command too: pending rows go onto RQ, the report is printed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from core.db import get_database
from core.lifecycle import Lifecycle
from core.notify import NullNotifier
from jobs.runtime import build_runtime
from redis_client import get_queue
from tests.conftest import SettingsFactory
from tests.support.analyses import age_row, store_upload
from tests.support.audio import wav_bytes
from tests.support.processes import settings_env


def test_one_pass_from_the_command_line_enqueues_pending_rows(make_settings: SettingsFactory) -> None:
    settings = make_settings(reconcile_grace_s=5)
    runtime = build_runtime(settings)
    analysis = store_upload(runtime, wav_bytes(0.2))  # Redis was down when it was uploaded
    age_row(runtime, analysis.id)

    done = subprocess.run(
        [sys.executable, "-m", "workers.reconcile"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["redispatched"] == [analysis.id]
    assert get_queue("audio_analysis", runtime.redis).job_ids == [analysis.id]
    row = Lifecycle(get_database(settings.database_url), NullNotifier()).require(analysis.id)
    assert row.status.value == "queued"


def test_the_command_exits_1_when_redis_is_unreachable(make_settings: SettingsFactory) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0")

    done = subprocess.run(
        [sys.executable, "-m", "workers.reconcile"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["skipped"] == "Redis is unreachable"
