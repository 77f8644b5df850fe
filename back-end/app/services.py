"""The objects the API works with, built once per app from its settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from app.callbacks import InProcessCallbacks
from app.inprocess import InProcessRunner
from app.intake import Intake
from core.db import Database, get_database
from core.lifecycle import Lifecycle
from core.metrics import RedisJobMetrics
from core.notify import RedisNotifier
from core.settings import Settings
from core.storage import Storage
from jobs.dispatch import Dispatcher
from redis_client import make_async_redis, make_redis
from tasks.runtime import Runtime


@dataclass
class Services:
    settings: Settings
    database: Database
    redis: Redis
    async_redis: AsyncRedis
    lifecycle: Lifecycle
    storage: Storage
    runner: InProcessRunner
    dispatcher: Dispatcher
    intake: Intake
    callbacks: InProcessCallbacks
    started_monotonic: float = field(default_factory=time.monotonic)  # readiness's start-up grace counts from here

    @property
    def runtime(self) -> Runtime:
        """What in-process jobs use: the same objects as the API."""
        callbacks = None if self.settings.use_rq_queue else self.callbacks
        return Runtime(self.settings, self.database, self.lifecycle, self.storage, self.redis, callbacks)

    async def aclose(self) -> None:
        await self.runner.aclose()
        await self.callbacks.aclose()
        await self.async_redis.aclose()
        self.redis.close()


def build_services(settings: Settings) -> Services:
    database = get_database(settings.database_url)
    connection = make_redis(settings, role="api")
    lifecycle = Lifecycle(database, RedisNotifier(connection), metrics=RedisJobMetrics(connection))
    storage = Storage(settings.storage_dir)
    storage.ensure()
    runner = InProcessRunner(settings, lifecycle)
    dispatcher = Dispatcher(settings, connection, runner, lifecycle)
    return Services(
        settings=settings,
        database=database,
        redis=connection,
        async_redis=make_async_redis(settings),
        lifecycle=lifecycle,
        storage=storage,
        runner=runner,
        dispatcher=dispatcher,
        intake=Intake(settings, lifecycle, storage, dispatcher),
        callbacks=InProcessCallbacks(settings),
    )
