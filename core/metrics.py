"""Job metrics recorded where job state changes (`core.lifecycle`), shared by every process.

`JobMetrics` is what the lifecycle calls; `NullMetrics` records nothing;
`RedisJobMetrics` keeps counters and histograms in Redis hashes, because a job
starts in one process (a worker, or the API for in-process jobs) and may be
retried, canceled or repaired in another, possibly on another host: only a
store they all share can add those up. The API's `/metrics` reads them back
with `RedisJobMetrics.read()`.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.client import Pipeline

from core.settings import QUEUES_BY_PRIORITY

log = logging.getLogger(__name__)


class JobMetrics(Protocol):
    """Counts and times job transitions, per queue."""

    def started(self, queue: str, attempt: int, wait_s: float | None) -> None:
        """A run began; `wait_s` is upload-to-start latency, given for the first attempt only."""

    def finished(self, queue: str, duration_s: float | None) -> None:
        """A run succeeded; `duration_s` is the duration of that run."""

    def failed(self, queue: str) -> None:
        """A job failed for good."""

    def retried(self, queue: str) -> None:
        """A run failed and the job will be tried again."""

    def canceled(self, queue: str) -> None:
        """A job was canceled or stopped."""

    def callback(self, outcome: CallbackOutcome) -> None:
        """A callback attempt ended: delivered, failed with a retry left, or undeliverable for good."""


class NullMetrics:
    """Records nothing."""

    def started(self, queue: str, attempt: int, wait_s: float | None) -> None:
        return None

    def finished(self, queue: str, duration_s: float | None) -> None:
        return None

    def failed(self, queue: str) -> None:
        return None

    def retried(self, queue: str) -> None:
        return None

    def canceled(self, queue: str) -> None:
        return None

    def callback(self, outcome: CallbackOutcome) -> None:
        return None


# --- what is stored, and where --------------------------------------------------------

KEY_PREFIX = "audiokit:metrics:"
EVENTS_KEY = KEY_PREFIX + "job_events"  # hash, field `<event>:<queue>` -> count
JOB_DURATION_KEY = KEY_PREFIX + "job_duration_seconds"  # hash, see _histogram_fields
UPLOAD_TO_START_KEY = KEY_PREFIX + "upload_to_start_seconds"
CALLBACKS_KEY = KEY_PREFIX + "callbacks"  # hash, field `<outcome>` -> count
RETENTION_KEY = KEY_PREFIX + "retention_deleted"  # hash, field `job` | `file` -> count (`jobs.retention`)

# Analyses take from ~0.05 s (a short WAV) to minutes (long files, a slow analysis server);
# RQ kills a job at RQ_JOB_TIMEOUT (15 min by default), so 900 s is the last finite bucket.
JOB_DURATION_BUCKETS_S: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
# From milliseconds (an idle worker picks a job at once) to minutes (a backlog, a retry storm,
# workers down); `scheduled_at` uploads wait on purpose, so the buckets reach an hour.
UPLOAD_TO_START_BUCKETS_S: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
)
INF_LABEL = "+Inf"


class JobEvent(enum.StrEnum):
    """What the counters count, one per hook of `JobMetrics`."""

    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    RETRIED = "retried"
    CANCELED = "canceled"


_EVENT_NAMES = frozenset(event.value for event in JobEvent)


class CallbackOutcome(enum.StrEnum):
    """How a callback attempt ended (`audiokit_callbacks_total{outcome}`)."""

    DELIVERED = "delivered"
    RETRIED = "retried"  # the attempt failed; another one follows after the backoff
    UNDELIVERABLE = "undeliverable"  # the last attempt failed, or the target was refused


_CALLBACK_OUTCOMES = frozenset(outcome.value for outcome in CallbackOutcome)


@dataclass(frozen=True)
class HistogramSnapshot:
    """One queue's histogram as Prometheus wants it: cumulative buckets ending with `+Inf`."""

    buckets: tuple[tuple[float, int], ...]  # (upper bound, observations <= bound), last bound is inf
    sum: float
    count: int


@dataclass(frozen=True)
class JobMetricsSnapshot:
    """Everything `RedisJobMetrics` has stored, read in one consistent round-trip."""

    events: dict[JobEvent, dict[str, int]]  # event -> queue -> count
    job_duration_s: dict[str, HistogramSnapshot]  # queue -> histogram
    upload_to_start_s: dict[str, HistogramSnapshot]
    callbacks: dict[CallbackOutcome, int] = dataclasses.field(default_factory=dict)  # outcome -> count


def _bound_label(bound: float) -> str:
    return INF_LABEL if math.isinf(bound) else format(bound, "g")


def _bucket_for(bounds: tuple[float, ...], value: float) -> str:
    """The label of the one bucket `value` falls in (`le` semantics: value <= bound)."""
    index = bisect.bisect_left(bounds, value)
    return _bound_label(bounds[index]) if index < len(bounds) else INF_LABEL


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class _QueuedMetrics:
    """`JobMetrics` queuing each hook's writes on a transaction the caller executes (`RedisJobMetrics.into`)."""

    def __init__(self, pipe: Pipeline) -> None:
        self._pipe = pipe

    def started(self, queue: str, attempt: int, wait_s: float | None) -> None:
        self._count(JobEvent.STARTED, queue, UPLOAD_TO_START_KEY, UPLOAD_TO_START_BUCKETS_S, wait_s)

    def finished(self, queue: str, duration_s: float | None) -> None:
        self._count(JobEvent.FINISHED, queue, JOB_DURATION_KEY, JOB_DURATION_BUCKETS_S, duration_s)

    def failed(self, queue: str) -> None:
        self._count(JobEvent.FAILED, queue)

    def retried(self, queue: str) -> None:
        self._count(JobEvent.RETRIED, queue)

    def canceled(self, queue: str) -> None:
        self._count(JobEvent.CANCELED, queue)

    def callback(self, outcome: CallbackOutcome) -> None:
        self._pipe.hincrby(CALLBACKS_KEY, outcome.value, 1)

    def _count(
        self,
        event: JobEvent,
        queue: str,
        histogram_key: str | None = None,
        bounds: tuple[float, ...] = (),
        value: float | None = None,
    ) -> None:
        self._pipe.hincrby(EVENTS_KEY, f"{event.value}:{queue}", 1)
        if histogram_key is not None and value is not None and not math.isnan(value):
            # Clocks of API and worker hosts may disagree by a little; a wait is never negative.
            value = max(0.0, value)
            self._pipe.hincrby(histogram_key, f"bucket:{_bucket_for(bounds, value)}:{queue}", 1)
            self._pipe.hincrbyfloat(histogram_key, f"sum:{queue}", value)  # the count is the buckets' total


class RedisJobMetrics(_QueuedMetrics):
    """`JobMetrics` in Redis hashes: one pipelined round-trip per hook, never an error to the caller.

    Histograms store one count per bucket (not cumulative), so an observation
    is a single HINCRBY; `read()` accumulates them. Every write of one hook is
    a MULTI/EXEC, so a scrape never sees a count without its sum. `into(pipe)`
    gives the same hooks writing into the caller's transaction (a job's change
    counted in the round trip of its notification: `core.notify`).
    """

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    @staticmethod
    def into(pipe: Pipeline) -> JobMetrics:
        """The hooks, queuing their writes on `pipe` (a MULTI/EXEC the caller executes)."""
        return _QueuedMetrics(pipe)

    def callback(self, outcome: CallbackOutcome) -> None:
        try:
            self.connection.hincrby(CALLBACKS_KEY, outcome.value, 1)
        except redis.exceptions.RedisError as exc:
            log.debug("callback metric %s not recorded: %s", outcome.value, exc)

    def retention_deleted(self, jobs: int, files: int) -> None:
        """Jobs (with their domain rows) and stored files that retention removed."""
        try:
            pipe = self.connection.pipeline(transaction=True)
            pipe.hincrby(RETENTION_KEY, "job", jobs)
            pipe.hincrby(RETENTION_KEY, "file", files)
            pipe.execute()
        except redis.exceptions.RedisError as exc:
            log.debug("retention metric not recorded: %s", exc)

    def read_retention(self) -> dict[str, int]:
        """`{"job": n, "file": m}`: what retention removed so far, in every process.

        Raises:
            redis.exceptions.RedisError: Redis cannot be read.
        """
        stored = self.connection.hgetall(RETENTION_KEY)
        return {"job": 0, "file": 0} | {_text(kind): int(count) for kind, count in stored.items()}

    # --- writing ----------------------------------------------------------------------

    def _count(self, event: JobEvent, queue: str, *observation: Any) -> None:
        """One hook's writes, as a transaction of their own."""
        try:
            with self.connection.pipeline(transaction=True) as pipe:
                _QueuedMetrics(pipe)._count(event, queue, *observation)
                pipe.execute()
        except redis.exceptions.RedisError as exc:
            # Metrics are best-effort: a job must never fail, or be retried, because Redis hiccuped here.
            log.debug("job metric %s on %s not recorded: %s", event.value, queue, exc)

    # --- reading ----------------------------------------------------------------------

    def read(self, queues: Iterable[str] = QUEUES_BY_PRIORITY) -> JobMetricsSnapshot:
        """Every stored counter and histogram; `queues` are reported even before their first job.

        Raises:
            redis.exceptions.RedisError: Redis cannot be read.
        """
        pipe = self.connection.pipeline(transaction=True)
        pipe.hgetall(EVENTS_KEY)
        pipe.hgetall(JOB_DURATION_KEY)
        pipe.hgetall(UPLOAD_TO_START_KEY)
        pipe.hgetall(CALLBACKS_KEY)
        events_raw, duration_raw, wait_raw, callbacks_raw = pipe.execute()
        known = list(queues)
        events: dict[JobEvent, dict[str, int]] = {event: dict.fromkeys(known, 0) for event in JobEvent}
        for field, value in events_raw.items():
            name, _, queue = _text(field).partition(":")
            if name in _EVENT_NAMES:
                events[JobEvent(name)][queue] = int(value)
        return JobMetricsSnapshot(
            events=events,
            job_duration_s=_histograms(duration_raw, JOB_DURATION_BUCKETS_S, known),
            upload_to_start_s=_histograms(wait_raw, UPLOAD_TO_START_BUCKETS_S, known),
            callbacks=dict.fromkeys(CallbackOutcome, 0)
            | {CallbackOutcome(_text(k)): int(v) for k, v in callbacks_raw.items() if _text(k) in _CALLBACK_OUTCOMES},
        )


def _histograms(
    raw: dict[bytes | str, bytes | str], bounds: tuple[float, ...], queues: list[str]
) -> dict[str, HistogramSnapshot]:
    """Per-bucket counts from a hash, accumulated into one `HistogramSnapshot` per queue."""
    per_bucket: dict[str, dict[float, int]] = {queue: {} for queue in queues}
    sums: dict[str, float] = {}
    for field, value in raw.items():
        kind, _, rest = _text(field).partition(":")
        if kind == "bucket":
            label, _, queue = rest.partition(":")
            bound = math.inf if label == INF_LABEL else float(label)
            per_bucket.setdefault(queue, {})[bound] = int(value)
        elif kind == "sum":
            sums[rest] = float(value)
        # `count:<queue>` fields of older releases are ignored: the buckets' total is the count.
    snapshots = {}
    for queue, stored in per_bucket.items():
        # Bounds stored by an older release stay visible: a bucket is never silently dropped.
        all_bounds = sorted({*bounds, *stored, math.inf})
        running = 0
        cumulative = []
        for bound in all_bounds:
            running += stored.get(bound, 0)
            cumulative.append((bound, running))
        snapshots[queue] = HistogramSnapshot(tuple(cumulative), sums.get(queue, 0.0), running)
    return snapshots
