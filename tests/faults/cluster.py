"""A whole deployment on one machine, for fault injection: Redis, API, workers, scheduler, fake analysis server.

Scenarios count in Jepsen's queue terms: of the uploads `attempted`, how many
were `acknowledged` (202), how many ended `finished` or `failed`, how many are
`lost` (acknowledged, never ended), and how many effects were duplicated (a
callback delivered twice, or a final result written twice).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from core.db import get_database, migrate
from core.lifecycle import Lifecycle
from core.models import Job
from core.notify import NullNotifier
from core.settings import PROJECT_ROOT, Settings, load_settings
from devserver.redis import RedisServer
from tests.support.audio import wav_bytes
from tests.support.fake_services import FakeServices
from tests.support.processes import ApiServer, ManagedProcess, settings_env, start_workers, stop_together, wait_for

ADMIN_KEY = "fault-admin-key"
# Each test process writes its scenarios' tally lines here (processes run in parallel under xdist).
FAULT_TALLIES = Path("test-artifacts") / "fault-tallies"
TERMINAL = ("finished", "failed", "canceled")
# Worker modes (`WORKER_MODE`): a fork per job, or jobs in the warm worker (`start_worker.sh --no-fork`).
FORK, SIMPLE = "fork", "simple"
BOTH_WORKER_MODES = (FORK, SIMPLE)

# Fast recovery for tests: a dead worker's job is noticed ~1 + 5 s after its last heartbeat and
# picked up by the next maintenance (every 3 s); lost rows are re-enqueued after 3 s of silence.
FAULT_SETTINGS: dict[str, Any] = {
    "worker_count": 1,
    "worker_job_monitoring_interval_s": 1,
    "worker_lease_margin_s": 5,
    "worker_maintenance_interval_s": 5,
    "worker_ttl_s": 20,
    "rq_retry_max": 3,
    "rq_retry_intervals": "1",
    "reconcile_interval_s": 1,
    "reconcile_grace_s": 3,
    "sse_poll_interval_s": 0.5,
    "admin_api_key": ADMIN_KEY,
    # Callbacks: signed, to the loopback receiver (which the SSRF guard refuses by default).
    "callback_signing_secret": "whsec_dGVzdC1zaWduaW5nLXNlY3JldC0wMTIzNDU2Nzg5",
    "callback_allowed_networks": "127.0.0.0/8",
}


def kill_runner(pid: int) -> None:
    """SIGKILLs the process running a job: its work-horse (in a process group of its own), or in simple
    mode the worker itself, which may be gone already with its pool's group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Tally:
    scenario: str
    attempted: int
    acknowledged: int
    finished: int
    failed: int
    lost: int
    duplicate_effects: int
    undelivered_callbacks: int

    def line(self) -> str:
        return (
            f"{self.scenario}: attempted={self.attempted} acknowledged={self.acknowledged} "
            f"finished={self.finished} failed={self.failed} lost={self.lost} "
            f"duplicate-effects={self.duplicate_effects} undelivered-callbacks={self.undelivered_callbacks}"
        )


def assert_nothing_lost(tally: Tally, *, failed: int = 0, acknowledged: int | None = None) -> None:
    """A scenario passes: nothing lost or duplicated, every callback delivered, the expected failures.

    `acknowledged` defaults to every attempted upload; scenarios that refuse some uploads on purpose
    (Redis out of memory) name how many were accepted.
    """
    assert tally.lost == 0, tally.line()
    assert tally.duplicate_effects == 0, tally.line()
    assert tally.undelivered_callbacks == 0, tally.line()
    assert tally.failed == failed, tally.line()
    assert tally.acknowledged == (tally.attempted if acknowledged is None else acknowledged), tally.line()


class Cluster:
    """Processes of one deployment sharing one database, storage and Redis."""

    def __init__(
        self, tmp_path: Path, redis: RedisServer, fake: FakeServices, *, worker_mode: str = "fork", **overrides: Any
    ) -> None:
        """`worker_mode`: how the analysis workers run jobs, "fork" or "simple" (`start_worker.sh --no-fork`)."""
        self.tmp_path = tmp_path
        self.worker_mode = worker_mode
        self.redis = redis
        self.fake = fake
        self.base: dict[str, Any] = FAULT_SETTINGS | {
            "redis_url": redis.url,
            "database_url": f"sqlite:///{tmp_path / 'faults.db'}",
            "storage_dir": tmp_path / "uploads",
            "analysis_server_url": fake.analyze_url,
        }
        self.base |= overrides
        self.settings = self.settings_for()
        migrate(self.settings.database_url)
        self.lifecycle = Lifecycle(get_database(self.settings.database_url), NullNotifier())
        self.processes: list[ManagedProcess] = []
        self.api: ApiServer | None = None
        self.callback_worker: ManagedProcess | None = None

    def settings_for(self, **overrides: Any) -> Settings:
        return load_settings(env_file="", **(self.base | overrides))

    def _log(self, name: str) -> Path:
        return self.tmp_path / f"{name}-{len(self.processes)}.log"

    def start_api(self, *, as_deployed: bool = False, **overrides: Any) -> ApiServer:
        self.api = ApiServer(self.settings_for(**overrides), self._log("api"), as_deployed=as_deployed)
        self.processes.append(self.api)
        return self.api

    def start_workers(self, *args: str, **overrides: Any) -> ManagedProcess:
        """Starts an analysis worker pool (returned), and the callbacks worker (as the Procfile does) if none runs."""
        process = start_workers(self.settings_for(**overrides), self._log("worker"), *args, mode=self.worker_mode)
        self.processes.append(process)
        if self.callback_worker is None or not self.callback_worker.alive:
            self.callback_worker = start_workers(self.settings_for(), self._log("callbacks"), "-q", "callbacks")
            self.processes.append(self.callback_worker)
        return process

    def start_scheduler(self, **overrides: Any) -> ManagedProcess:
        env = settings_env(self.settings_for(**overrides))
        python = str(PROJECT_ROOT / ".venv" / "bin" / "python")
        process = ManagedProcess([python, "-m", "workers.scheduler"], env, self._log("scheduler"))
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        stop_together(self.processes, timeout_s=10)

    # --- traffic ----------------------------------------------------------------------------

    def upload(self, count: int, seconds: float = 0.5, **fields: str) -> tuple[int, list[str]]:
        """Uploads `count` files with a callback; returns (attempted, acknowledged ids)."""
        assert self.api is not None
        acknowledged = []
        with httpx.Client(base_url=self.api.url, timeout=30) as client:
            for index in range(count):
                data = wav_bytes(seconds, freq_hz=200.0 + index)
                response = client.post(
                    "/audio",
                    files={"file": (f"upload-{index}.wav", data)},
                    data={"callback_url": self.fake.callback_url, **fields},
                )
                if response.status_code in (200, 202):
                    acknowledged.append(response.json()["id"])
        return count, acknowledged

    def rows(self, ids: list[str]) -> dict[str, Job | None]:
        return {analysis_id: self.lifecycle.get(analysis_id) for analysis_id in ids}

    def wait_started(self, count: int = 1, timeout_s: float = 90) -> dict[str, int]:
        """Waits until `count` runs are inside the analysis server; returns id -> PID of the runner."""

        def running() -> dict[str, int] | None:
            pids = self.fake.runner_pids()
            return pids if len(pids) >= count else None

        return wait_for(running, timeout_s, f"{count} run(s) to reach the analysis server")

    def drain(self, ids: list[str], timeout_s: float = 120) -> None:
        """Waits until every acknowledged analysis ended and its callback arrived (or the deadline)."""
        deadline = time.monotonic() + timeout_s
        pause = 0.1
        while time.monotonic() < deadline:
            rows = self.rows(ids)
            ended = all(row is not None and row.status.value in TERMINAL for row in rows.values())
            if ended and all(self.fake.callbacks[analysis_id] for analysis_id in ids):
                return
            time.sleep(pause)
            pause = min(pause * 1.5, 1.0)  # reading every row is not free: ask less often as the wait goes on

    def tally(self, scenario: str, attempted: int, ids: list[str]) -> Tally:
        rows = self.rows(ids)
        status = {analysis_id: row.status.value if row else "missing" for analysis_id, row in rows.items()}
        final_writes = {
            analysis_id: sum(1 for line in row.logs if line["message"].startswith("finished")) if row else 0
            for analysis_id, row in rows.items()
        }
        duplicates = sum(max(0, self.fake.callbacks[analysis_id] - 1) for analysis_id in ids)
        duplicates += sum(max(0, writes - 1) for writes in final_writes.values())
        ended = [analysis_id for analysis_id in ids if status[analysis_id] in ("finished", "failed")]
        return Tally(
            scenario=scenario,
            attempted=attempted,
            acknowledged=len(ids),
            finished=sum(1 for value in status.values() if value == "finished"),
            failed=sum(1 for value in status.values() if value == "failed"),
            lost=sum(1 for value in status.values() if value not in TERMINAL),
            duplicate_effects=duplicates,
            undelivered_callbacks=sum(1 for analysis_id in ended if not self.fake.callbacks[analysis_id]),
        )
