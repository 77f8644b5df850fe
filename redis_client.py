"""The one place that builds Redis connections, queues and jobs.

Every job is JSON-serialized (a pickle-serialized queue lets anyone who can
write to Redis run code on the workers) and every job runs through `KitJob`,
which calls only the kit's own job functions below: a task's job is
`run_job(job_id)`, which runs only tasks registered with `@task`
(`jobs.registry`). Producer, workers, scheduler and dashboard all use these
classes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry
from rq.callbacks import Callback
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Dependency, Job
from rq.rate_limit import RateLimit
from rq.serializers import JSONSerializer
from rq.utils import now

from core.errors import JobNotAllowed, QueueFull, QueueUnavailable, RedisPolicyError
from core.settings import Settings, get_settings, intervals_for

log = logging.getLogger(__name__)

# The allow-list: the only functions a worker calls for a job (names only: nothing is imported here).
RUN_JOB = "jobs.execute.run_job"  # every task's job: runs the registered task its row names
RECONCILE = "jobs.maintenance.reconcile"
RETENTION = "jobs.maintenance.retention"
PERIODIC_FIRE = "jobs.maintenance.fire"  # a periodic task's tick, enqueued by the scheduler
DELIVER_CALLBACK = "jobs.callbacks.deliver_callback"
ON_FAILURE = "jobs.outcomes.on_failure"
ON_STOPPED = "jobs.outcomes.on_stopped"
ALLOWED_JOB_FUNCTIONS = frozenset({RUN_JOB, RECONCILE, RETENTION, PERIODIC_FIRE, DELIVER_CALLBACK})
ALLOWED_CALLBACKS = frozenset({ON_FAILURE, ON_STOPPED})

# The API gives up on Redis fast (an upload then stays "pending"); workers wait longer on purpose.
_API_RETRIES = 1
HEALTH_CHECK_INTERVAL_S = 15  # ping idle pooled connections before reuse, so a Redis restart is noticed
# redis-py otherwise looks its version up in the installed packages' metadata for every new connection
# (2-8 ms each), and a work-horse opens its connections anew for every job.
_DRIVER_INFO = DriverInfo(lib_version=redis.__version__)


class PayloadNotAllowed(JobNotAllowed, DeserializationError):
    """Raised when a job's payload is not JSON (e.g. a planted pickle); RQ handles it as a bad payload."""


class KitJob(Job):
    """An RQ job that is JSON by default and refuses functions outside the allow-list."""

    def __init__(self, id: str | None = None, connection: redis.Redis | None = None, serializer: Any = None):
        super().__init__(id, connection=connection, serializer=serializer or JSONSerializer)

    def _deserialize_data(self) -> None:
        try:
            super()._deserialize_data()  # type: ignore[no-untyped-call]
        except DeserializationError:
            raise PayloadNotAllowed("job payload is not valid JSON; nothing was run") from None

    def _checked_name(self, name: str | None, allowed: frozenset[str], what: str) -> str | None:
        if name is not None and name not in allowed:
            raise JobNotAllowed(f"{what} {name!r} is not on the allow-list; nothing was run")
        return name

    @property
    def func(self) -> Callable[..., Any] | None:
        name = self.func_name
        instance = self.instance
        if instance is not None:
            raise JobNotAllowed("jobs calling methods on objects are not allowed; nothing was run")
        self._checked_name(name, ALLOWED_JOB_FUNCTIONS, "job function")
        return super().func  # type: ignore[no-any-return]

    @property
    def success_callback(self) -> Any:
        self._checked_name(self._success_callback_name, ALLOWED_CALLBACKS, "success callback")
        return super().success_callback

    @property
    def failure_callback(self) -> Any:
        self._checked_name(self._failure_callback_name, ALLOWED_CALLBACKS, "failure callback")
        return super().failure_callback

    @property
    def stopped_callback(self) -> Any:
        self._checked_name(self._stopped_callback_name, ALLOWED_CALLBACKS, "stopped callback")
        return super().stopped_callback


class KitIntermediateQueue(IntermediateQueue):
    """RQ's list of jobs taken from a queue and not yet registered as started, failed over after
    `WORKER_LEASE_MARGIN_S` instead of RQ's fixed minute.

    A live worker registers the job it took within one round trip. One that died in between (Redis
    crashed under it, or lost the registration with the last second of its AOF) leaves the job here, and
    maintenance hands it to RQ's failure handling (retry or fail) once it has been seen here that long.
    """

    def should_be_cleaned_up(self, job_id: str) -> bool:
        first_seen = self.get_first_seen(job_id)
        if first_seen is None:
            return False
        return bool(now() - first_seen > timedelta(seconds=get_settings().worker_lease_margin_s))


class KitQueue(Queue):
    """An RQ queue of `KitJob`s, JSON-serialized."""

    job_class = KitJob

    def __init__(self, name: str = "default", connection: redis.Redis | None = None, **kwargs: Any) -> None:
        kwargs["serializer"] = kwargs.get("serializer") or JSONSerializer
        kwargs["job_class"] = kwargs.get("job_class") or KitJob
        super().__init__(name, connection=connection, **kwargs)

    def acquire_maintenance_lock(self) -> bool:
        """RQ's lock on cleaning this queue's registries, expiring after one maintenance interval, not 899 s.

        The worker that cleans releases the lock when done; the expiry only matters when it dies while
        cleaning (SIGKILL, out of memory). With RQ's 15 minutes, no worker would look for the abandoned
        jobs of this queue (a dead worker's job, its concurrency slot) for that long.
        """
        ttl = get_settings().worker_maintenance_interval_s
        return bool(self.connection.set(self.registry_cleaning_key, 1, nx=True, ex=ttl))

    @property
    def intermediate_queue(self) -> KitIntermediateQueue:
        return KitIntermediateQueue(self.key, connection=self.connection)


def make_redis(settings: Settings, *, role: str = "api") -> redis.Redis:
    """A Redis client for `settings` (password and TLS come with the URL: `rediss://`).

    Args:
        settings: the service settings.
        role: "api" fails fast when Redis is down; "worker" keeps RQ's own timeouts and reconnect loop.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "socket_keepalive": True,
        "driver_info": _DRIVER_INFO,
    }
    if role == "api":
        options["socket_timeout"] = settings.redis_socket_timeout_s
        options["retry"] = RedisRetry(ExponentialBackoff(cap=0.2, base=0.05), _API_RETRIES)
    return redis.Redis.from_url(settings.resolved_redis_url, **options)


def make_async_redis(settings: Settings) -> redis.asyncio.Redis:
    """An asyncio Redis client for the API's event streams."""
    return redis.asyncio.Redis.from_url(
        settings.resolved_redis_url,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )


def get_queue(name: str, connection: redis.Redis) -> KitQueue:
    return KitQueue(name, connection=connection)


def fetch_job(job_id: str, connection: redis.Redis) -> KitJob | None:
    """The RQ job with this id, or None when Redis has no such job."""
    try:
        return cast(KitJob, KitJob.fetch(job_id, connection=connection))
    except NoSuchJobError:
        return None


def retry_policy(settings: Settings) -> Retry | None:
    """RQ's `Retry` from `RQ_RETRY_MAX` / `RQ_RETRY_INTERVALS` (None when retries are off)."""
    if settings.rq_retry_max <= 0:
        return None
    return Retry(max=settings.rq_retry_max, interval=list(settings.retry_intervals_s))


def _retry(retries: int, intervals: Sequence[int]) -> Retry | None:
    return Retry(max=retries, interval=list(intervals_for(retries, intervals or (0,)))) if retries > 0 else None


def enqueue(
    connection: redis.Redis,
    settings: Settings,
    func: str,
    *args: Any,
    job_id: str,
    queue_name: str,
    at: datetime | None = None,
    description: str | None = None,
    on_failure: str | None = None,
    on_stopped: str | None = None,
    job_timeout: int | None = None,
    retries: int | None = None,
    retry_intervals: Sequence[int] = (),
    rate_limit: RateLimit | None = None,
    depends_on: Dependency | None = None,
) -> KitJob:
    """Enqueues `func(*args)` with the service's TTLs and the job's timeout and retry policy.

    `rate_limit` and `depends_on` are RQ's, passed on (`jobs.limits`, `jobs.dependencies`).

    `job_timeout`, `retries` and `retry_intervals` default to `RQ_JOB_TIMEOUT` and `RQ_RETRY_*`.

    Raises:
        QueueFull: Redis is out of memory and refuses writes (nothing was written).
        QueueUnavailable: Redis cannot be reached.
    """
    queue = get_queue(queue_name, connection)
    options: dict[str, Any] = {
        "args": args,
        "job_id": job_id,
        "job_timeout": job_timeout or settings.rq_job_timeout,
        "result_ttl": settings.rq_result_ttl,
        "failure_ttl": settings.rq_failure_ttl,
        "retry": retry_policy(settings) if retries is None else _retry(retries, retry_intervals),
        # Never derived from client input: rq-dashboard renders it unescaped.
        "description": description or f"{func.rsplit('.', 1)[-1]}({job_id})",
        "on_failure": Callback(on_failure) if on_failure else None,
        "on_stopped": Callback(on_stopped) if on_stopped else None,
    }
    if rate_limit is not None:
        options["rate_limit"] = rate_limit
    if depends_on is not None:
        options["depends_on"] = depends_on
    try:
        if at is not None:
            return cast(KitJob, queue.enqueue_at(at, func, **options))
        return cast(KitJob, queue.enqueue(func, **options))
    except redis.exceptions.OutOfMemoryError as exc:
        raise QueueFull("the queue is out of memory; try again later") from exc
    except redis.exceptions.ResponseError as exc:
        if "OOM" in str(exc) or "maxmemory" in str(exc):  # inside MULTI it may come wrapped
            raise QueueFull("the queue is out of memory; try again later") from exc
        # Anything else Redis refuses (a read-only replica after a failover...): retry later.
        raise QueueUnavailable(f"Redis refused the job: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc


def enqueue_unique(
    connection: redis.Redis,
    func: str,
    *args: Any,
    job_id: str,
    queue_name: str,
    job_timeout: int,
    retry: Retry | None,
    result_ttl: int,
    failure_ttl: int,
    on_failure: str | None = None,
) -> KitJob:
    """Enqueues `func(*args)` unless a job with `job_id` exists (RQ's `unique=True`), with its own policy.

    Raises:
        DuplicateJobError: a job with this id exists (waiting, running or ended).
        QueueUnavailable: Redis cannot be reached or refuses the write.
    """
    queue = get_queue(queue_name, connection)
    try:
        job = queue.enqueue(
            func,
            args=args,
            job_id=job_id,
            job_timeout=job_timeout,
            result_ttl=result_ttl,
            failure_ttl=failure_ttl,
            retry=retry,
            description=f"{func.rsplit('.', 1)[-1]}({job_id})",
            on_failure=Callback(on_failure) if on_failure else None,
            unique=True,
        )
    except redis.exceptions.RedisError as exc:
        raise QueueUnavailable(f"Redis refused or did not take the job: {exc}") from exc
    return cast(KitJob, job)


def check_redis_policy(connection: redis.Redis) -> list[str]:
    """Checks that Redis keeps queued jobs; returns warnings.

    Raises:
        RedisPolicyError: the server may evict keys (any `maxmemory-policy` but `noeviction`).
    """
    try:
        config = connection.config_get("maxmemory-policy") | connection.config_get("appendonly")
        config |= connection.config_get("save")
    except redis.exceptions.ResponseError:
        # Managed Redis services often disable CONFIG; their eviction policy must be checked by hand.
        return ["could not read the Redis configuration (CONFIG GET refused): check maxmemory-policy yourself"]
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        raise RedisPolicyError(
            f"Redis maxmemory-policy is {policy!r}: it may evict queued jobs. "
            "Set `maxmemory-policy noeviction` on the server."
        )
    warnings = []
    if config.get("appendonly") != "yes" and not config.get("save"):
        warnings.append("Redis persistence is off (no AOF, no RDB): a Redis restart loses queued jobs")
    return warnings
