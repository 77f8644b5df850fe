"""A running service for one scenario: a fresh database and storage, the API, and workers in RQ mode.

Every process started here is stopped on the way out, also when start-up or the scenario fails. With a
`code_root` (another checkout, e.g. `git worktree add /tmp/before main`), the API and the workers run
that checkout's code with this checkout's interpreter: its "before" numbers, measured in the same run.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from rq import Worker

from core.db import migrate
from core.settings import Settings, load_settings
from devserver.ports import free_port
from devserver.redis import RedisServer
from tests.support.processes import ApiServer, ManagedProcess, settings_env, start_workers, wait_for

WORKERS_READY_TIMEOUT_S = 30.0
API_READY_TIMEOUT_S = 60.0
BACKGROUND_CONCURRENCY = 2  # in-process analyses at once in background mode: one per core here


@dataclass(frozen=True)
class StackConfig:
    """What to run: the flag, and how many RQ workers (0 in background mode)."""

    name: str
    use_rq_queue: bool
    workers: int = 0
    code_root: Path | None = None  # another checkout's code (None: this one's)
    no_fork: bool = False  # the workers in no-fork mode (`start_worker.sh --no-fork`)

    @property
    def label(self) -> str:
        before = " [before]" if self.code_root is not None else ""
        if self.use_rq_queue:
            return f"rq {self.workers}w{' no-fork' if self.no_fork else ''}{before}"
        return f"bg c{BACKGROUND_CONCURRENCY}{before}"

    def of(self, code_root: Path | None) -> StackConfig:
        """The same scenario on another checkout's code."""
        if code_root is None:
            return self
        return StackConfig(f"{self.name}-before", self.use_rq_queue, self.workers, code_root.resolve(), self.no_fork)


class CheckoutApi(ManagedProcess):
    """The API of another checkout as deployed (`python -m app`): its code first on the path, run from its
    directory."""

    def __init__(self, settings: Settings, log_path: Path, code_root: Path) -> None:
        self.port = free_port()
        env = settings_env(settings) | {"PORT": str(self.port), "HOST": "127.0.0.1"}
        super().__init__([sys.executable, "-m", "app"], _checkout_env(env, code_root), log_path, cwd=code_root)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_for(self._ready, API_READY_TIMEOUT_S, f"the API of {code_root}", max_interval_s=0.1)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if not self.alive:
            raise RuntimeError(f"the API exited:\n{self.output()[-3000:]}")
        try:
            answered = httpx.get(f"{self.url}/health", timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False
        return answered and self.listens_on(self.port)


def _checkout_env(env: dict[str, str], code_root: Path) -> dict[str, str]:
    # The checkout's modules come before this one's editable install; start_worker.sh takes this interpreter.
    return env | {"PYTHONPATH": f"{code_root}:{code_root / 'back-end'}", "PYTHON": sys.executable}


@dataclass(frozen=True)
class Stack:
    config: StackConfig
    settings: Settings
    api: ApiServer | CheckoutApi
    log_dir: Path
    workers: ManagedProcess | None = None  # the worker pool in RQ mode


def _workers_registered(connection: redis.Redis, expected: int) -> bool:
    return Worker.count(connection=connection) >= expected


@contextmanager
def running_stack(config: StackConfig, redis_server: RedisServer, root: Path) -> Iterator[Stack]:
    """Starts the service of `config` against an emptied `redis_server`, with its files under `root`/name."""
    directory = root / config.name
    log_dir = directory / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with redis_server.client() as client:
        client.flushall()
    settings = load_settings(
        env_file="",
        use_rq_queue=config.use_rq_queue,
        redis_url=redis_server.url,
        database_url=f"sqlite:///{directory / 'audiokit.db'}",
        storage_dir=directory / "uploads",
        admin_api_key=secrets.token_urlsafe(24),
        worker_count=max(1, config.workers),
        background_concurrency=BACKGROUND_CONCURRENCY,
    )
    migrate(settings.database_url)
    with ExitStack() as cleanup:
        code_root = config.code_root
        # Either stops itself if it never gets ready.
        api = (
            ApiServer(settings, log_dir / "api.log", as_deployed=True)  # its HTTP protocol, as `make run`'s
            if code_root is None
            else CheckoutApi(settings, log_dir / "api.log", code_root)
        )
        cleanup.callback(api.stop)
        workers: ManagedProcess | None = None
        if config.use_rq_queue:
            arguments = ["-n", str(config.workers), *(["--no-fork"] if config.no_fork else [])]
            if code_root is None:
                workers = start_workers(settings, log_dir / "workers.log", *arguments)
            else:
                env = _checkout_env(settings_env(settings), code_root)
                workers = ManagedProcess(
                    [str(code_root / "start_worker.sh"), *arguments], env, log_dir / "workers.log", cwd=code_root
                )
            cleanup.callback(workers.stop)
            with redis_server.client() as client:
                wait_for(
                    lambda: _workers_registered(client, config.workers) or not workers.alive,
                    WORKERS_READY_TIMEOUT_S,
                    f"{config.workers} RQ worker(s) to register",
                )
            if not workers.alive:
                raise RuntimeError(f"the workers exited:\n{workers.output()[-3000:]}")
        yield Stack(config, settings, api, log_dir, workers)
