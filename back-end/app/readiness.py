"""Readiness: can this deployment take work and carry it out? Every check, and what is wrong with each."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import redis

from app.services import Services
from jobs.reconcile_status import read_passes, reconciler_problem
from jobs.rq_state import scheduler_problems, served_queues, stuck_jobs
from jobs.stuck import stuck_jobs as stuck_rows

OK = "ok"
WRITE_PROBE_KEY = "audiokit:health:write_probe"
WRITE_PROBE_TTL_S = 10


@dataclass
class Readiness:
    """`checks` holds every check's verdict ("ok" or what is wrong); `problems` names the failed ones."""

    checks: dict[str, str | list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def verdict(self, name: str, problem: str | None) -> None:
        self.checks[name] = OK if problem is None else problem
        if problem is not None:
            self.problems.append(name)

    @property
    def ready(self) -> bool:
        return not self.problems


def _database(services: Services, readiness: Readiness) -> None:
    try:
        services.database.ping()
        readiness.verdict("database", None)
    except Exception as exc:
        readiness.verdict("database", f"error: {type(exc).__name__}")


def _redis_writable(connection: redis.Redis) -> str | None:
    """A real write: a Redis out of memory under `noeviction` answers PING but refuses SET."""
    try:
        connection.set(WRITE_PROBE_KEY, 1, ex=WRITE_PROBE_TTL_S)
    except redis.exceptions.ResponseError as exc:
        return f"not writable: {exc}"
    return None


def _workers_and_schedulers(services: Services, readiness: Readiness) -> None:
    settings = services.settings
    served = served_queues(services.redis, settings.worker_ttl_s)
    unserved = [name for name in settings.worker_queues if name not in served]
    readiness.verdict("workers", f"no live worker on {', '.join(unserved)}" if unserved else None)
    scheduler = scheduler_problems(services.redis, settings.worker_queues)
    readiness.verdict("scheduler", "; ".join(scheduler) if scheduler else None)


def _reconciler(services: Services, readiness: Readiness) -> None:
    uptime_s = time.monotonic() - services.started_monotonic
    problem = reconciler_problem(
        read_passes(services.redis), interval_s=services.settings.reconcile_interval_s, uptime_s=uptime_s
    )
    readiness.verdict("reconciler", problem)


def _stuck_jobs(services: Services, readiness: Readiness) -> None:
    """Jobs past their timeout + margin: RQ's started registries (any RQ job, the reconciler's too) and the
    rows of either mode (`jobs.stuck`, in-process jobs included)."""
    stuck = [job for name in services.settings.worker_queues for job in stuck_jobs(services.redis, name)]
    with contextlib.suppress(Exception):  # the database check reports a database that is down
        stuck += [job.id for job in stuck_rows(services.database, services.settings.stuck_margin_s)]
    stuck = list(dict.fromkeys(stuck))
    readiness.checks["stuck_jobs"] = stuck  # the ids, for compatibility with the `/health` body
    if stuck:
        readiness.problems.append("stuck_jobs")


def _redis_failed(readiness: Readiness, problem: str) -> None:
    readiness.checks["redis"] = problem
    if "redis" not in readiness.problems:
        readiness.problems.append("redis")


def assess(services: Services) -> Readiness:
    """Runs every readiness check; never raises."""
    readiness = Readiness()
    _database(services, readiness)
    try:
        services.redis.ping()
        readiness.verdict("redis", _redis_writable(services.redis))
        # Reads still work when writes are refused: report the rest too.
        if services.settings.use_rq_queue:
            _workers_and_schedulers(services, readiness)
        _reconciler(services, readiness)
        _stuck_jobs(services, readiness)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        _redis_failed(readiness, f"unreachable: {exc}")
    except redis.exceptions.OutOfMemoryError as exc:  # the probe's SET got in just before memory ran out
        _redis_failed(readiness, f"not writable: {exc}")
    except redis.exceptions.RedisError as exc:
        _redis_failed(readiness, f"error: {type(exc).__name__}: {exc}")
    return readiness
