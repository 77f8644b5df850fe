"""A running service for one scenario: a fresh database and storage, the API, and workers in RQ mode.

Every process started here is stopped on the way out, also when start-up or the scenario fails.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from rq import Worker

from core.db import migrate
from core.settings import Settings, load_settings
from devserver.redis import RedisServer
from tests.support.processes import ApiServer, ManagedProcess, start_workers, wait_for

WORKERS_READY_TIMEOUT_S = 30.0
BACKGROUND_CONCURRENCY = 2  # in-process analyses at once in background mode: one per core here


@dataclass(frozen=True)
class StackConfig:
    """What to run: the flag, and how many RQ workers (0 in background mode)."""

    name: str
    use_rq_queue: bool
    workers: int = 0

    @property
    def label(self) -> str:
        if self.use_rq_queue:
            return f"rq {self.workers}w"
        return f"bg c{BACKGROUND_CONCURRENCY}"


@dataclass(frozen=True)
class Stack:
    config: StackConfig
    settings: Settings
    api: ApiServer
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
        api = ApiServer(settings, log_dir / "api.log")  # stops itself if it never gets ready
        cleanup.callback(api.stop)
        workers: ManagedProcess | None = None
        if config.use_rq_queue:
            workers = start_workers(settings, log_dir / "workers.log", "-n", str(config.workers))
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
