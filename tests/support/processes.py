"""Real processes for integration and fault tests: workers via start_worker.sh, the API via uvicorn."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
from pydantic import SecretStr

from core.settings import PROJECT_ROOT, Settings
from devserver.ports import free_port

T = TypeVar("T")


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process read exactly `settings` (and no .env file)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RQ_", "REDIS_"))}
    env["ENV_FILE"] = ""
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, tuple | list):
            value = ",".join(str(item) for item in value)
        env[name.upper()] = str(value)
    return env


def wait_for(
    condition: Callable[[], T | None],
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
    max_interval_s: float = 0.5,
) -> T:
    """Polls `condition` until it returns something truthy; fails with `what` after the deadline.

    The pause between polls starts at `interval_s` and grows by half each time up to `max_interval_s`:
    quick answers are seen at once, and a long wait does not spend the machine's CPU on asking (a
    condition often costs several HTTP requests or database reads).
    """
    deadline = time.monotonic() + timeout_s
    pause = interval_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 1.5, max(interval_s, max_interval_s))


def wait_until_ended(client: httpx.Client, analysis_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """Polls `GET /audio/{id}` until the analysis is finished, failed or canceled; returns its body."""

    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/audio/{analysis_id}").json()
        return body if body["status"] in ("finished", "failed", "canceled") else None

    return wait_for(ended, timeout_s, f"analysis {analysis_id} to end")


class ManagedProcess:
    """A child process in its own session, with its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path = PROJECT_ROOT) -> None:
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._terminating = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, sig: int) -> None:
        if self.alive:
            self.process.send_signal(sig)

    def listens_on(self, port: int) -> bool:
        """Whether this process holds a listening socket on `port`: the answer on a port came from it,
        not from another process that had taken the port first (this one then exits, unable to bind)."""
        try:
            connections = psutil.Process(self.process.pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signals the whole process group (e.g. a worker pool and its work-horses)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def terminate(self) -> None:
        """Sends SIGTERM once (a second one would make a worker pool stop at once, not warmly)."""
        if self.alive and not self._terminating:
            self._terminating = True
            self.process.send_signal(signal.SIGTERM)

    def kill_tree(self) -> int:
        """SIGKILL to the process and every descendant (work-horses run in their own process groups)."""
        if not self.alive:  # stopped already (its PID may even belong to someone else by now)
            self._log.close()
            return self.process.returncode
        for pid in [self.process.pid, *_descendants(self.process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        self.kill_group()  # a child forked after the descendants were listed (a pool's respawned worker)
        self._log.close()
        return self.process.returncode

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then SIGKILL of the group after `timeout_s`; returns the exit code."""
        if self.alive:
            self.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill_group()
                self.process.wait()
        self.kill_group()  # work-horses live in their own groups; the pool's group may hold leftovers
        self._log.close()
        return self.process.returncode


def _descendants(root: int) -> list[int]:
    """PIDs of every live descendant of `root`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def exited(pid: int) -> bool:
    """The process has ended (a zombie waiting to be reaped holds nothing and runs nothing either)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def kill_all(processes: list[ManagedProcess]) -> None:
    """A test's teardown: its processes and their children are killed at once (a graceful stop, which
    tests check where it matters, would cost seconds per deployment)."""
    for process in processes:
        process.kill_tree()


def stop_together(processes: Sequence[ManagedProcess], timeout_s: float = 20.0) -> None:
    """Stops every process at once (SIGTERM to all, then waits): a deployment's stop costs its slowest
    process's shutdown, not the sum of them."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.stop(timeout_s=max(0.1, deadline - time.monotonic()))


def start_workers(
    settings: Settings, log_path: Path, *args: str, mode: str | None = None, **env_overrides: Any
) -> ManagedProcess:
    """Runs `./start_worker.sh` with `settings`, as an operator would (`mode` "simple": with `--no-fork`)."""
    env = settings_env(settings) | {key: str(value) for key, value in env_overrides.items()}
    flags = ("--no-fork",) if mode == "simple" else ()
    return ManagedProcess([str(PROJECT_ROOT / "start_worker.sh"), *args, *flags], env, log_path)


class ApiServer(ManagedProcess):
    """The API under uvicorn, on a free loopback port (`factory`: another app factory, e.g. a test app)."""

    def __init__(
        self, settings: Settings, log_path: Path, factory: str = "app.main:create_app", *, as_deployed: bool = False
    ) -> None:
        """`as_deployed`: run `python -m app` (as `make run` and the deployment files do), not uvicorn's CLI."""
        self.port = free_port()
        env = settings_env(settings) | {"PORT": str(self.port), "HOST": "127.0.0.1"}
        uvicorn = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1"]
        uvicorn += ["--port", str(self.port)]
        argv = [sys.executable, "-m", "app"] if as_deployed else uvicorn
        super().__init__(argv, env, log_path)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_for(self._ready, 60, f"the API on port {self.port}", max_interval_s=0.1)
        except BaseException:
            self.stop()  # the caller never gets this object, so nobody else would
            raise

    def _ready(self) -> bool:
        if not self.alive:
            raise AssertionError(f"the API exited:\n{self.output()[-3000:]}")
        try:
            answered = httpx.get(f"{self.url}/health", timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False
        return answered and self.listens_on(self.port)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)
