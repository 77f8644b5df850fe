"""What a running job needs (settings, database, storage, Redis), built once per process.

A worker builds it once, before it forks a work-horse per job, and the work-horse
uses the same one: the database engine gives the child an empty pool of its own
(`core.db`), and redis-py's connection pool opens new connections in a process
other than the one that created it. The API installs its own runtime for jobs it
runs in-process, so those use the app's settings.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Protocol

import redis

from core.db import Database, get_database
from core.lifecycle import Lifecycle
from core.metrics import RedisJobMetrics
from core.notify import RedisNotifier
from core.settings import Settings, get_settings
from core.storage import Storage, build_storage
from redis_client import make_redis


class CallbackSubmitter(Protocol):
    """Delivers callbacks inside this process (the API's in-process mode, `jobs.local_callbacks`)."""

    def submit(self, job_id: str) -> None: ...


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    database: Database
    lifecycle: Lifecycle
    storage: Storage
    redis: redis.Redis
    # Set in the API when USE_RQ_QUEUE=false; workers enqueue callback jobs instead.
    callbacks: CallbackSubmitter | None = None


def build_runtime(settings: Settings, *, role: str = "worker", connection: redis.Redis | None = None) -> Runtime:
    """`connection`: a Redis client to share (e.g. a worker's own), else a new one for `role`."""
    database = get_database(settings.database_url)
    connection = connection or make_redis(settings, role=role)
    return Runtime(
        settings=settings,
        database=database,
        lifecycle=Lifecycle(database, RedisNotifier(connection), metrics=RedisJobMetrics(connection)),
        storage=build_storage(settings),
        redis=connection,
    )


_installed: Runtime | None = None
_built: Runtime | None = None  # inherited by a forked work-horse
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def install_runtime(runtime: Runtime | None) -> None:
    """Makes `runtime` the one jobs use in this process (the API does this at start-up)."""
    global _installed
    _installed = runtime


def share_worker_connection(connection: redis.Redis) -> None:
    """Makes the runtime jobs use in this worker process use the worker's own Redis client (built with the
    same worker options), so a work-horse opens one Redis connection, not two. The API's runtime is left alone."""
    global _built
    if _installed is not None:
        return
    with _lock:
        if _built is None or _built.redis is not connection:
            settings = _built.settings if _built is not None else get_settings()
            _built = build_runtime(settings, connection=connection)


def get_runtime() -> Runtime:
    if _installed is not None:
        return _installed
    global _built
    with _lock:
        if _built is None:
            _built = build_runtime(get_settings())
        return _built
