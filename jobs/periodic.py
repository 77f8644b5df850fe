"""Periodic tasks: a `@task` that also runs on a schedule, a cron expression or an interval.

    @periodic(cron="*/5 * * * *")              # minute, hour, day of month, month, day of week (UTC)
    @task(queue="high_priority", retry=0)
    def refresh_prices() -> dict: ...

    @periodic(every="30s")                     # or every=lambda settings: settings.some_interval_s
    @task
    def poll_partner() -> None: ...

A schedule divides time into ticks: for `every`, whole multiples of the interval since the epoch; for
`cron`, the expression's times. Each tick runs once: its run is a job whose idempotency key is the tick
(`periodic:2026-11-28T12:05:00Z`), so a second submission of the same tick (two scheduler processes, a
scheduler restart, two API processes) replays the first and runs nothing. With `record=False` the task
is called directly, without a job row, once per tick by a Redis lock named after the tick (the
reconciler: it repairs the job layer, so it must not depend on a row of its own).

Who fires the ticks: with `USE_RQ_QUEUE=true`, the scheduler process (`workers.scheduler`) registers
every declared task in rq-scheduler, which enqueues `fire(name)` on a worker at each tick; in-process,
the API's lifespan runs `run_forever`, which waits for each task's next tick itself.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from croniter import croniter

from core.errors import IdempotencyConflict
from core.settings import Settings, parse_duration_s
from jobs.registry import TaskDef, definition_of

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TICK_LOCK_PREFIX = "audiokit:periodic:tick:"
TICK_LOCK_TTL_S = 2 * 86400  # longer than any tick's lateness


def tick_key(tick: datetime) -> str:
    """The idempotency key of a tick's job."""
    return f"periodic:{tick.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


@dataclass(frozen=True)
class Schedule:
    """A cron expression (UTC) or an interval in seconds (fixed, or read from the settings)."""

    cron: str | None = None
    every: int | Callable[[Settings], int] | None = None

    def interval_s(self, settings: Settings) -> int | None:
        if self.every is None:
            return None
        return self.every if isinstance(self.every, int) else int(self.every(settings))

    def describe(self, settings: Settings) -> str:
        return f"cron {self.cron}" if self.cron is not None else f"every {self.interval_s(settings)}s"

    def tick_at(self, moment: datetime, settings: Settings) -> datetime:
        """The latest tick at or before `moment`."""
        moment = _utc(moment).replace(microsecond=0)
        interval = self.interval_s(settings)
        if interval is not None:
            elapsed = int((moment - EPOCH).total_seconds())
            return EPOCH + timedelta(seconds=elapsed - elapsed % interval)
        previous: datetime = croniter(self.cron, moment + timedelta(seconds=1)).get_prev(datetime)
        return _utc(previous)

    def next_after(self, moment: datetime, settings: Settings) -> datetime:
        """The first tick strictly after `moment`."""
        moment = _utc(moment)
        interval = self.interval_s(settings)
        if interval is not None:
            return self.tick_at(moment, settings) + timedelta(seconds=interval)
        following: datetime = croniter(self.cron, moment).get_next(datetime)
        return _utc(following)


@dataclass(frozen=True)
class PeriodicDef:
    definition: TaskDef
    schedule: Schedule
    record: bool  # True: each tick is a job (a row, visible in /jobs); False: a direct call

    @property
    def name(self) -> str:
        return self.definition.name


_periodic: dict[str, PeriodicDef] = {}
_lock = threading.Lock()


def periodic(
    *, cron: str | None = None, every: int | str | Callable[[Settings], int] | None = None, record: bool = True
) -> Callable[[F], F]:
    """Runs a `@task` (declared below this decorator, without parameters) on a schedule.

    Args:
        cron: a five-field cron expression, in UTC.
        every: an interval: seconds, `"30s"`, `"5m"`, or a function of the settings giving seconds.
        record: False runs the task directly, without a job row (once per tick, by a Redis lock).

    Raises:
        ValueError: neither or both of cron and every, a bad cron expression or interval.
        TypeError: the function is not a `@task`, or its task takes required parameters.
    """
    if (cron is None) == (every is None):
        raise ValueError("give @periodic either cron= or every=")
    if cron is not None and not croniter.is_valid(cron):
        raise ValueError(f"not a cron expression: {cron!r}")
    interval: int | Callable[[Settings], int] | None = None
    if every is not None:
        interval = every if callable(every) else parse_duration_s(every)
        if isinstance(interval, int) and interval < 1:
            raise ValueError("every must be at least one second")
    schedule = Schedule(cron=cron, every=interval)

    def register(target: F) -> F:
        definition = definition_of(target)
        try:
            inspect.signature(target).bind()
        except TypeError:
            raise TypeError(f"{definition.name}: a periodic task is called without arguments") from None
        with _lock:
            _periodic[definition.name] = PeriodicDef(definition, schedule, record)
        return target

    return register


def declared() -> dict[str, PeriodicDef]:
    """The periodic tasks registered in this process (import `TASK_MODULES` first)."""
    return dict(_periodic)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# Running a tick -------------------------------------------------------------------------------------


def run_tick(entry: PeriodicDef, tick: datetime, *, submitter: Any, redis: Any) -> dict[str, Any]:
    """Runs `entry` for `tick`, once: a job keyed by the tick, or a direct call under a per-tick lock.

    `submitter` is a `jobs.submit.Submitter`; `redis` a connection (used for `record=False` only).
    """
    from jobs.execute import call_task  # execute imports the runtime; keep this module light

    stamp = tick_key(tick)
    if not entry.record:
        if not redis.set(f"{TICK_LOCK_PREFIX}{entry.name}:{stamp}", "1", nx=True, ex=TICK_LOCK_TTL_S):
            return {"task": entry.name, "tick": stamp, "ran": False}
        return {"task": entry.name, "tick": stamp, "ran": True, "result": call_task(entry.definition, [], {})}
    try:
        submitted = submitter.submit(submitter.build(entry.definition, idempotency_key=stamp), log=f"tick {stamp}")
    except IdempotencyConflict:
        return {"task": entry.name, "tick": stamp, "ran": False}
    return {"task": entry.name, "tick": stamp, "job_id": submitted.job.id, "ran": not submitted.replayed}


# Reporting ------------------------------------------------------------------------------------------

SCHEDULED_JOBS_KEY = "rq:scheduler:scheduled_jobs"  # rq-scheduler's sorted set: job id -> due time (epoch s)
SCHEDULER_JOB_PREFIX = "periodic-"  # `workers.scheduler` registers task T as the job `scheduler_job_id(T)`


def scheduler_job_id(task_name: str) -> str:
    """The rq-scheduler job of a periodic task: `periodic-<name, RQ's characters only>-<hash of the name>`."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", task_name)
    return f"{SCHEDULER_JOB_PREFIX}{readable}-{hashlib.sha256(task_name.encode()).hexdigest()[:8]}"


def status(settings: Settings, redis: Any, now: datetime | None = None) -> list[dict[str, Any]]:
    """Each declared periodic task: its schedule, queue, whether its ticks are jobs, and its next run.

    With `USE_RQ_QUEUE=true` the next run is rq-scheduler's (None: not registered, no scheduler has
    started since it was declared); in-process it is the next tick.

    Raises:
        redis.exceptions.RedisError: Redis is unreachable (RQ mode).
    """
    now = now or datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for name, entry in sorted(declared().items()):
        next_run: datetime | None
        if settings.use_rq_queue:
            score = redis.zscore(SCHEDULED_JOBS_KEY, scheduler_job_id(name))
            next_run = datetime.fromtimestamp(float(score), UTC) if score is not None else None
        else:
            next_run = entry.schedule.next_after(now, settings)
        rows.append(
            {
                "task": name,
                "schedule": entry.schedule.describe(settings),
                "queue": entry.definition.queue,
                "record": entry.record,
                "next_run": next_run,
            }
        )
    return rows
