"""Accepting a job: check its arguments, commit its row (the acknowledgment), then dispatch it.

The one path by which work enters the kit, whatever the producer: the drop-in for
`BackgroundTasks` (`jobs.web.QueuedTasks`), an upload endpoint, a script. Arguments are JSON
and are checked here, in the caller, so a bad one is a `TypeError` at `add_task`, never a failure
in a worker. When Redis cannot take the job, the row stays `pending` and the reconciler enqueues
it later; only a Redis that refuses writes (out of memory) makes the submission fail, and then
nothing of it is kept.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from core.errors import CallbackRefused, IdempotencyConflict, IdempotencyMismatch, MalformedUpload, QueueFull
from core.lifecycle import Lifecycle
from core.models import Base, Job, JobStatus, OnDependencyFailure, Priority
from core.settings import Settings, parse_queue_names
from jobs.callback_target import TargetPolicy, parse_callback_url
from jobs.dispatch import Dispatched, Dispatcher, TaskAdder
from jobs.limits import check_ordering_key
from jobs.policy import default_backoff
from jobs.registry import TaskDef, definition_of

IDEMPOTENCY_KEY_MAX_CHARS = 255


@dataclass(frozen=True)
class Submitted:
    """What became of a submission: the job's row, where it went, and whether it repeats an earlier one."""

    job: Job
    dispatched: Dispatched | None  # None for a repeat of an earlier request
    replayed: bool = False

    @property
    def status(self) -> JobStatus:
        return self.dispatched.status if self.dispatched else self.job.status

    @property
    def position(self) -> int | None:
        return self.dispatched.position if self.dispatched else None


def check_json_arguments(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Raises a `TypeError` naming the first argument that is not plain JSON (ids and data, not objects)."""
    labelled = [(f"argument {index + 1}", value) for index, value in enumerate(args)]
    labelled += [(f"argument {key!r}", value) for key, value in kwargs.items()]
    for label, value in labelled:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name}: {label} ({type(value).__name__}) is not JSON-serializable ({exc}); "
                "pass ids and plain data (str, int, float, bool, None, lists, dicts), not objects"
            ) from None
        if _changes_in_json(value):
            raise TypeError(
                f"{name}: {label} would not survive JSON unchanged (tuples become lists, "
                "dict keys become strings); pass lists and string-keyed dicts"
            )


def _changes_in_json(value: Any) -> bool:
    if isinstance(value, tuple):
        return True
    if isinstance(value, list):
        return any(_changes_in_json(item) for item in value)
    if isinstance(value, dict):
        return any(not isinstance(key, str) or _changes_in_json(item) for key, item in value.items())
    return isinstance(value, float) and not math.isfinite(value)


def check_signature(definition: TaskDef, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Raises a `TypeError` when the call could not bind to the task's parameters."""
    try:
        inspect.signature(definition.func).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{definition.name}: {exc}") from None


def check_idempotency_key(key: str | None) -> str | None:
    """Raises:
    MalformedUpload: not 1-255 printable characters.
    """
    if key is None:
        return None
    if not key or len(key) > IDEMPOTENCY_KEY_MAX_CHARS or not key.isprintable():
        raise MalformedUpload(f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX_CHARS} printable characters")
    return key


def check_callback_url(text: str, settings: Settings) -> str:
    """A callback URL we can send to and sign, checked with the parser that sends it; literal IPs meet
    the SSRF guard now.

    Raises:
        MalformedUpload: not an http(s) URL we can send to, a refused address, or no signing secret.
    """
    if settings.callback_signing_secret is None:
        raise MalformedUpload("callbacks are not configured on this server (CALLBACK_SIGNING_SECRET is not set)")
    try:
        TargetPolicy.from_entries(settings.callback_allowed_networks).check_literal(parse_callback_url(text))
    except CallbackRefused as exc:
        raise MalformedUpload(str(exc)) from None
    return text


def parse_priority(value: str | Priority) -> Priority:
    """Raises:
    ValueError: not one of the levels (critical, high, normal, low).
    """
    try:
        return Priority(str(value).strip().lower())
    except ValueError:
        raise ValueError(f"priority must be one of {', '.join(Priority)}, not {value!r}") from None


def parse_on_dependency_failure(value: str | OnDependencyFailure) -> OnDependencyFailure:
    """Raises:
    ValueError: not `cancel` or `fail`.
    """
    try:
        return OnDependencyFailure(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(OnDependencyFailure)
        raise ValueError(f"on_dependency_failure must be one of {choices}, not {value!r}") from None


def dependency_ids(depends_on: Sequence[Any]) -> list[str]:
    """Job ids from ids or handles (anything with an `id`), in order, without repeats.

    Raises:
        TypeError: an item is neither a job id nor has one.
    """
    ids: list[str] = []
    for item in depends_on:
        job_id = item if isinstance(item, str) else getattr(item, "id", None)
        if not isinstance(job_id, str) or not job_id:
            raise TypeError(f"depends_on takes job ids or job handles, not {type(item).__name__}")
        if job_id not in ids:
            ids.append(job_id)
    return ids


def fingerprint(*parts: Any) -> str:
    """Identifies a request for `Idempotency-Key`: the same parts, the same fingerprint."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class Submitter:
    """Builds, commits and dispatches jobs."""

    def __init__(
        self, settings: Settings, lifecycle: Lifecycle, dispatcher: Dispatcher, rng: random.Random | None = None
    ) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.dispatcher = dispatcher
        self.rng = rng  # the jitter's source (None: the system's); tests pass a seeded one

    def build(
        self,
        func: Callable[..., Any] | TaskDef,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: str | Priority | None = None,
        at: datetime | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        callback_url: str | None = None,
        job_id: str | None = None,
        depends_on: Sequence[Any] = (),
        on_dependency_failure: str | OnDependencyFailure = OnDependencyFailure.CANCEL,
        ordering_key: str | None = None,
    ) -> Job:
        """A new `pending` job row for `func(*args, **kwargs)` with the task's defaults (not committed).

        The job goes to `queue` when given, else to its `priority` level's queue (`PRIORITY_QUEUES`), else
        to the task's own queue; its recorded priority is the given one, else its queue's level (`normal`
        for a queue of no level). With `depends_on` (job ids or handles) it runs once they have all
        finished; if one fails or is canceled, it is canceled or fails, by `on_dependency_failure`. Jobs
        with the same `ordering_key` run one at a time, in the order they were accepted (`jobs.limits`).

        Raises:
            TypeError: `func` is not a task, the arguments do not fit it or are not JSON.
            ValueError: a bad queue name, priority or `on_dependency_failure`, an unknown dependency,
                `depends_on` with `at`, or `ordering_key` with `at` or `depends_on`.
            MalformedUpload: a bad idempotency key, ordering key or callback URL (values a client sends: 422).
        """
        definition = func if isinstance(func, TaskDef) else definition_of(func)
        kwargs = dict(kwargs or {})
        check_signature(definition, args, kwargs)
        check_json_arguments(definition.name, args, kwargs)
        if queue is not None and (len(parse_queue_names(queue)) != 1 or "," in queue):
            raise ValueError(f"queue must be one queue name, not {queue!r}")
        level = parse_priority(priority) if priority is not None else None
        queue = queue or (self.settings.queue_for(level) if level is not None else definition.queue)
        level = level or Priority(self.settings.level_of(queue) or Priority.NORMAL)
        ordering_key = check_ordering_key(ordering_key, at)
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)  # a time without a zone is UTC, as every time the kit returns
        parents = dependency_ids(depends_on)
        on_failure = parse_on_dependency_failure(on_dependency_failure)
        if parents and at is not None:
            raise ValueError("a job runs either at a time (`at`) or after others (`depends_on`), not both")
        if parents and ordering_key is not None:
            # A keyed job waits for the previous job of its key whatever became of it; a dependent waits
            # for its parents to finish. RQ holds one dependency, with one `allow_failure`, per job.
            raise ValueError("a job runs either after others (`depends_on`) or in its key's order (`ordering_key`)")
        missing = [parent for parent in parents if self.lifecycle.get(parent) is None]
        if missing:
            raise ValueError(f"depends_on: no job with id {missing[0]!r}")
        retries = definition.retries if definition.retries is not None else self.settings.rq_retry_max
        # Drawn once, here: RQ's `Retry` takes a list, and every later dispatch reuses the row's.
        intervals = (definition.backoff or default_backoff(self.settings)).intervals(retries, self.rng)
        return Job(
            id=job_id or uuid.uuid4().hex,
            task=definition.name,
            args=list(args),
            kwargs=kwargs,
            status=JobStatus.PENDING,
            queue=queue,
            priority=level.value,
            mode=self.dispatcher.mode,
            timeout_s=definition.timeout_s or self.settings.rq_job_timeout,
            retries=retries,
            retry_intervals=list(intervals),
            callback_url=check_callback_url(callback_url, self.settings) if callback_url else None,
            scheduled_at=at.astimezone(UTC) if at is not None else None,
            idempotency_key=check_idempotency_key(idempotency_key),
            request_hash=request_hash,
            depends_on=parents,
            on_dependency_failure=on_failure,
            ordering_key=ordering_key,
            attempts=0,
            progress=0,
            logs=[],
            cancel_requested=False,
        )

    def earlier(self, job: Job) -> Submitted | None:
        """The earlier job with the same task and idempotency key, if any.

        Raises:
            IdempotencyMismatch: the key was used for a different request.
        """
        if job.idempotency_key is None:
            return None
        found = self.lifecycle.find_by_key(job.task, job.idempotency_key)
        if found is None:
            return None
        if found.request_hash != job.request_hash:
            raise IdempotencyMismatch("this Idempotency-Key was used with a different request")
        return Submitted(found, None, replayed=True)

    def submit(
        self,
        job: Job,
        *rows: Base,
        background_tasks: TaskAdder | None = None,
        log: str = "accepted",
    ) -> Submitted:
        """Commits `job` (with domain `rows` that point at it, in the same transaction), then dispatches it.

        Raises:
            IdempotencyMismatch: the job's idempotency key was used for a different request (422).
            IdempotencyConflict: another process committed the same key just now (409).
            QueueFull: Redis refuses writes; nothing was kept (503).
        """
        replay = self.earlier(job)
        if replay is not None:
            return replay
        lines = [log]
        planned = self.dispatcher.planned_status(job)
        if planned is not None:
            # Committed as it will be once dispatched, so the submission is one transaction; a crash before
            # the enqueue leaves a row RQ does not hold, which the reconciler dispatches again.
            job.status, job.mode = planned, self.dispatcher.mode
            lines.append(f"{planned.value} ({job.mode.value}, {job.queue})")
        try:
            job = self.lifecycle.accept(job, *rows, log=lines)
        except IntegrityError:
            # Another process committed the same key between our lookup and insert.
            raise IdempotencyConflict("a request with this Idempotency-Key is in progress") from None
        try:
            dispatched = self.dispatcher.dispatch(background_tasks, job, recorded=planned is not None)
        except QueueFull:
            self.lifecycle.discard(job.id, *(type(row) for row in rows))
            raise
        return Submitted(job, dispatched)
