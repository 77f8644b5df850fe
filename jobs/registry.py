"""Declaring a task: `@task(...)` on a plain function puts it on the allow-list with its defaults.

Workers run a job only when its task name is registered in their process, so the registry is the
allow-list: a name planted in Redis or in the database that no module registered runs nothing. A
process registers tasks by importing their modules: the API imports the ones its endpoints use,
workers and the scheduler import `TASK_MODULES` at start-up (before they fork).

    @task(queue="audio_analysis", timeout="15m", retry=3)
    async def send_receipt(order_id: int, *, email: str) -> dict: ...

    @task(retry=5, backoff=exponential(base="2s", max="5m", jitter=True))
    def call_partner(order_id: int) -> dict: ...

    @task(concurrency=1)  # one at a time across all workers
    def rebuild_index() -> None: ...

`def` and `async def` both work, on RQ workers and in-process. The function stays callable as it
was: the decorator returns it unchanged, with its declaration attached.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from core.settings import QUEUE_NORMAL, Settings, parse_duration_s
from jobs.policy import Backoff, BackoffKind

F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "__job_task__"
# `add_task`'s own keyword-only options: a task parameter of the same name would be ambiguous.
OPTION_NAMES = frozenset({"queue", "priority", "at", "idempotency_key", "callback_url", "ordering_key"})
MAX_CONCURRENCY = 1000  # a limit above any worker fleet's size is no limit


@dataclass(frozen=True)
class TaskDef:
    """A registered task and its defaults (None: the settings' `RQ_JOB_TIMEOUT`, `RQ_RETRY_*`)."""

    name: str
    func: Callable[..., Any]
    queue: str
    timeout_s: int | None
    retries: int | None
    retry_intervals: tuple[int, ...] | None
    backoff: Backoff | None = None  # `retry_intervals` as a fixed backoff, or an exponential one
    concurrency: int | None = None  # at most this many of its jobs run at once, everywhere (None: no limit)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)


_tasks: dict[str, TaskDef] = {}
_lock = threading.Lock()


@overload
def task(func: F, /) -> F: ...


@overload
def task(
    *,
    name: str | None = None,
    queue: str = QUEUE_NORMAL,
    timeout: int | str | None = None,
    retry: int | None = None,
    retry_intervals: Sequence[int] | None = None,
    backoff: Backoff | None = None,
    concurrency: int | None = None,
) -> Callable[[F], F]: ...


def task(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    queue: str = QUEUE_NORMAL,
    timeout: int | str | None = None,
    retry: int | None = None,
    retry_intervals: Sequence[int] | None = None,
    backoff: Backoff | None = None,
    concurrency: int | None = None,
) -> Any:
    """Registers a module-level function as a task; usable as `@task` or `@task(...)`.

    Args:
        name: the stable name stored with each job (default `module.function`); keep it when moving code.
        queue: the RQ queue its jobs go to (workers must serve it: `WORKER_QUEUES` / `-q`).
        timeout: a hard limit per attempt, `900`, `"15m"` or `"1h"` (in-process: checked at progress reports).
        retry: retries after a failed attempt (0: none).
        retry_intervals: the backoff before each retry, in seconds (the last one repeats).
        backoff: instead of `retry_intervals`, a policy: `exponential(base=, max=, jitter=)` or `fixed(...)`
            (`jobs.policy`); default `RQ_RETRY_BACKOFF`.
        concurrency: at most this many of its jobs run at once, across all workers (in-process: in this
            process); the others stay `queued` until a slot frees (`jobs.limits`).

    Raises:
        ValueError: a bad timeout, retry or concurrency, both `retry_intervals` and `backoff`, or a name registered for
            another function.
        TypeError: not a module-level function, or a parameter named like an `add_task` option.
    """

    def register(target: F) -> F:
        if not inspect.isfunction(target) or "<locals>" in target.__qualname__:
            raise TypeError(f"@task needs a module-level function, not {target!r}")
        clash = sorted(OPTION_NAMES & set(inspect.signature(target).parameters))
        if clash:
            raise TypeError(
                f"{target.__qualname__}: parameter {', '.join(clash)} has the name of an add_task option; rename it"
            )
        intervals = tuple(_check_intervals(retry_intervals)) if retry_intervals is not None else None
        if intervals is not None and backoff is not None:
            raise ValueError("give retry_intervals or backoff, not both")
        policy = backoff
        if policy is not None and not isinstance(policy, Backoff):
            raise ValueError("backoff must be jobs.exponential(...) or jobs.fixed(...)")
        if intervals is not None:
            policy = Backoff(BackoffKind.FIXED, intervals_s=intervals)
        elif policy is not None and policy.kind is BackoffKind.FIXED:
            intervals = policy.intervals_s
        definition = TaskDef(
            name=name or f"{target.__module__}.{target.__qualname__}",
            func=target,
            queue=queue,
            timeout_s=parse_duration_s(timeout) if timeout is not None else None,
            retries=_check_retries(retry),
            retry_intervals=intervals,
            backoff=policy,
            concurrency=_check_concurrency(concurrency),
        )
        with _lock:
            known = _tasks.get(definition.name)
            if known is not None and _origin(known.func) != _origin(target):
                raise ValueError(f"task name {definition.name!r} is registered already, for {known.func!r}")
            _tasks[definition.name] = definition
        setattr(target, ATTRIBUTE, definition)
        return target

    return register(func) if func is not None else register


def _origin(func: Callable[..., Any]) -> tuple[str, str]:
    return func.__module__, func.__qualname__


def _check_retries(retry: int | None) -> int | None:
    if retry is not None and (isinstance(retry, bool) or not 0 <= retry <= 25):
        raise ValueError("retry must be a whole number from 0 to 25")
    return retry


def _check_concurrency(concurrency: int | None) -> int | None:
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY
    ):
        raise ValueError(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}")
    return concurrency


def _check_intervals(intervals: Iterable[int]) -> list[int]:
    values = list(intervals)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise ValueError("retry_intervals must be whole seconds, at least one, none negative")
    return values


def definition_of(func: Callable[..., Any]) -> TaskDef:
    """The declaration of a task function.

    Raises:
        TypeError: the function is not decorated with `@task`.
    """
    definition = getattr(func, ATTRIBUTE, None)
    if not isinstance(definition, TaskDef):
        label = getattr(func, "__qualname__", repr(func))
        raise TypeError(f"{label} is not a task: decorate it with @task (from jobs import task)")
    return definition


def lookup(name: str) -> TaskDef | None:
    """The task registered under `name` in this process, if any."""
    return _tasks.get(name)


def registered() -> dict[str, TaskDef]:
    return dict(_tasks)


# The kit's own tasks (the reconciler and retention, periodic), registered wherever tasks are.
KIT_TASK_MODULES = ("jobs.maintenance",)


def import_task_modules(modules: Iterable[str]) -> None:
    """Imports the modules that declare tasks (`TASK_MODULES`) and the kit's own, registering their tasks.

    Raises:
        ImportError: a module cannot be imported (a typo in `TASK_MODULES`).
    """
    for module in (*KIT_TASK_MODULES, *modules):
        importlib.import_module(module)


def job_queues(settings: Settings) -> tuple[str, ...]:
    """The queues jobs of this process go to and its workers serve: the priority levels' (highest first),
    the workers' (`WORKER_QUEUES`), and every registered task's, in that order, each once."""
    names = [*settings.queues_by_priority, *settings.worker_queues, *(task.queue for task in _tasks.values())]
    return tuple(dict.fromkeys(names))
