"""`make run` as a newcomer uses it: everything comes up, an upload finishes, a crash is survived,
Ctrl-C stops it all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from core.settings import PROJECT_ROOT
from devserver.ports import free_port
from tests.support.audio import wav_bytes
from tests.support.processes import wait_for

pytestmark = pytest.mark.slow

RUNNER = [sys.executable, "-m", "devserver.run"]  # what `make run` runs once set up


def _processes_with_env(marker: str) -> dict[int, list[str]]:
    """Live processes whose environment contains `marker` (children of children included): pid -> argv."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
    return found


@dataclass
class Run:
    """A `make run` in its own session, like a terminal's foreground job."""

    process: subprocess.Popen[bytes]
    env_file: Path
    log_path: Path
    base: str
    redis_url: str

    def output(self) -> str:
        return self.log_path.read_text()

    def healthy(self) -> bool:
        assert self.process.poll() is None, self.output()
        try:
            return httpx.get(f"{self.base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def processes(self) -> dict[int, list[str]]:
        return _processes_with_env(str(self.env_file))

    def pids(self, module: str) -> set[int]:
        """PIDs of this run's Python processes started as `python -m module` (forked children included)."""
        return {
            pid
            for pid, argv in self.processes().items()
            if any(argv[i : i + 2] == ["-m", module] for i in range(len(argv) - 1))
        }

    def worker_pids(self) -> set[int]:
        """The worker pool's process and its workers: not their children (RQ's scheduler a worker forks, a
        work-horse, the spare work-horse kept forked ahead), which come and go with the jobs."""
        found = self.pids("workers.main")
        parent = {pid: psutil.Process(pid).ppid() for pid in found if psutil.pid_exists(pid)}
        return {pid for pid, ppid in parent.items() if parent.get(ppid) not in found}

    def upload_finishes(self) -> None:
        answer = httpx.post(f"{self.base}/audio", files={"file": ("tone.wav", wav_bytes(1.0))}, timeout=10)
        assert answer.status_code == 202, answer.text
        status_url = answer.json()["status_url"]
        final = wait_for(
            lambda: (body := httpx.get(status_url, timeout=5).json())["status"] in ("finished", "failed") and body,
            60,
            "the upload to finish",
        )
        assert final["status"] == "finished", final

    def ctrl_c(self) -> int:
        """Sends SIGINT to the whole foreground group, as Ctrl-C in a terminal does; returns the exit status."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise


@contextmanager
def make_run(tmp_path: Path, argv: list[str], **extra_env: str) -> Iterator[Run]:
    """Starts `argv` with a private Redis, database and storage under `tmp_path`; kills what is left at the end."""
    port, redis_port = free_port(), free_port()
    env_file = tmp_path / "run.env"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RQ_", "REDIS_"))}
    env |= {
        "ENV_FILE": str(env_file),
        "PORT": str(port),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",  # nothing there: make run starts a private Redis
        "REDIS_DATA_DIR": str(tmp_path / "redis"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "STORAGE_DIR": str(tmp_path / "uploads"),
        "WORKER_COUNT": "1",
        "SHUTDOWN_GRACE_S": "20",
    } | extra_env
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    run = Run(process, env_file, log_path, f"http://127.0.0.1:{port}", env["REDIS_URL"])
    try:
        yield run
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in run.processes():  # a failed test must not leave a stack running
            os.kill(pid, signal.SIGKILL)

    for probe in (port, redis_port):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{probe}/", timeout=1)


def test_make_run_serves_an_upload_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    with make_run(tmp_path, ["make", "--no-print-directory", "run"]) as run:
        wait_for(run.healthy, 90, "make run to report healthy")
        text = run.output()
        assert "Admin key" in text
        assert f"{run.base}/rq" in text
        assert "ADMIN_API_KEY=" in run.env_file.read_text()  # generated on first run

        run.upload_finishes()
        # runner, redis-server, API, worker pool + worker + RQ scheduler, rq-scheduler (shells aside)
        assert len(run.processes()) >= 7
        run.ctrl_c()  # make itself dies of the SIGINT; the runner's own status is checked below
        wait_for(lambda: not run.processes(), 30, "every process to exit", 0.2)
        assert "Ctrl-C stops everything" in run.output()


def test_a_killed_api_is_restarted_and_the_workers_and_scheduler_keep_running(tmp_path: Path) -> None:
    with make_run(tmp_path, RUNNER) as run:
        wait_for(run.healthy, 90, "make run to report healthy")
        # The pool and its one worker, then the rq-scheduler.
        workers = wait_for(lambda: len(pids := run.worker_pids()) >= 2 and pids, 60, "the pool's worker")
        scheduler = run.pids("workers.scheduler")
        (api,) = run.pids("app")
        assert scheduler

        os.kill(api, signal.SIGKILL)
        wait_for(lambda: run.healthy() and run.pids("app") not in (set(), {api}), 60, "a new API to answer")

        assert run.worker_pids() == workers
        assert run.pids("workers.scheduler") == scheduler
        assert "killed by SIGKILL" in run.output()
        run.upload_finishes()
        assert run.ctrl_c() == 0, run.output()
        assert not run.processes(), run.output()


def test_in_process_mode_runs_only_the_api_and_redis(tmp_path: Path) -> None:
    with make_run(tmp_path, RUNNER, USE_RQ_QUEUE="false") as run:
        wait_for(run.healthy, 90, "make run to report healthy")
        run.upload_finishes()  # run by the API itself

        assert run.pids("app"), run.processes()
        with redis.Redis.from_url(run.redis_url) as client:
            assert client.ping()  # the private Redis: the API keeps events and locks there
        assert not run.pids("workers.main"), run.processes()
        assert not run.pids("workers.scheduler"), run.processes()
        assert run.ctrl_c() == 0, run.output()
        assert not run.processes(), run.output()
