"""The kit's objects in a process that accepts jobs (an API), built once from its settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from core.db import Database, get_database
from core.lifecycle import Lifecycle
from core.metrics import RedisJobMetrics
from core.models import Base
from core.notify import RedisNotifier
from core.settings import Settings
from core.storage import Storage, build_storage
from jobs.dispatch import Dispatcher
from jobs.inprocess import InProcessRunner
from jobs.local_callbacks import InProcessCallbacks
from jobs.registry import import_task_modules
from jobs.runtime import Runtime
from jobs.submit import Submitter
from redis_client import make_async_redis, make_redis


@dataclass(kw_only=True)
class JobServices:
    settings: Settings
    database: Database
    redis: Redis
    async_redis: AsyncRedis
    lifecycle: Lifecycle
    storage: Storage
    runner: InProcessRunner
    dispatcher: Dispatcher
    submitter: Submitter
    callbacks: InProcessCallbacks
    started_monotonic: float = field(default_factory=time.monotonic)  # readiness's start-up grace counts from here
    # Domain tables whose rows (id = the job's) retention deletes with their job (`jobs.retention`).
    retention_dependents: tuple[type[Base], ...] = ()

    @property
    def runtime(self) -> Runtime:
        """What in-process jobs use: the same objects as the API."""
        callbacks = None if self.settings.use_rq_queue else self.callbacks
        return Runtime(self.settings, self.database, self.lifecycle, self.storage, self.redis, callbacks)

    async def aclose(self) -> None:
        # Running in-process jobs get half of SHUTDOWN_GRACE_S to reach a checkpoint; the rest is the
        # server's (in-flight requests first, then this), so that a supervisor's SIGKILL comes after both.
        await self.runner.aclose(grace_s=self.settings.shutdown_grace_s / 2)
        await self.callbacks.aclose()
        await self.async_redis.aclose()
        self.redis.close()


def job_services_kwargs(settings: Settings) -> dict[str, object]:
    """The kit's objects for `settings`, as keyword arguments (a subclass adds its own)."""
    import_task_modules(settings.task_modules)
    database = get_database(settings.database_url)
    connection = make_redis(settings, role="api")
    lifecycle = Lifecycle(database, RedisNotifier(connection), metrics=RedisJobMetrics(connection))
    storage = build_storage(settings)
    storage.ensure()
    runner = InProcessRunner(settings, lifecycle)
    dispatcher = Dispatcher(settings, connection, runner, lifecycle)
    return {
        "settings": settings,
        "database": database,
        "redis": connection,
        "async_redis": make_async_redis(settings),
        "lifecycle": lifecycle,
        "storage": storage,
        "runner": runner,
        "dispatcher": dispatcher,
        "submitter": Submitter(settings, lifecycle, dispatcher),
        "callbacks": InProcessCallbacks(settings),
    }


def build_job_services(settings: Settings) -> JobServices:
    return JobServices(**job_services_kwargs(settings))  # type: ignore[arg-type]
