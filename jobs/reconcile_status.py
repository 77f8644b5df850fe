"""The reconciler's record of its passes, kept in Redis so that any API process can judge it (readiness).

A pass records when it succeeded, or when and why it failed, in one hash. Times come from Redis's
own clock (`TIME`), so the scheduler, the workers and the API need not agree on theirs.

"Recently" is `LATE_AFTER_INTERVALS` x `RECONCILE_INTERVAL_S` (at least `LATE_AFTER_MIN_S`): the
reconciler is *late* when its last successful pass is older than that. An API process that has
just started gives it the same time for a first pass (start-up grace), so a fresh deployment,
or one restarted after a long stop, is not reported before the reconciler had a fair chance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

LAST_RUN_KEY = "audiokit:reconciler:last_run"
# Missing this many intervals in a row is a problem; one slow or failed pass is not.
LATE_AFTER_INTERVALS = 3
# rq-scheduler looks for due periodic jobs every 5 s, so with a tiny interval passes still come
# only every ~5 s: below this floor a healthy reconciler would be reported late.
LATE_AFTER_MIN_S = 15.0
_ERROR_MAX_CHARS = 300


@dataclass(frozen=True)
class PassRecord:
    """How long ago (seconds, by Redis's clock) the reconciler last succeeded and last failed."""

    succeeded_s_ago: float | None
    failed_s_ago: float | None
    error: str | None


def late_after_s(interval_s: float) -> float:
    """Seconds without a successful pass after which the reconciler counts as late."""
    return max(LATE_AFTER_INTERVALS * interval_s, LATE_AFTER_MIN_S)


def _redis_now(connection: redis.Redis) -> float:
    seconds, micros = connection.time()
    return float(seconds) + micros / 1_000_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def note_success(connection: redis.Redis) -> None:
    """Records a successful pass; never raises (a pass that worked is not undone by its record)."""
    try:
        connection.hset(LAST_RUN_KEY, "succeeded_at", _redis_now(connection))
    except redis.exceptions.RedisError as exc:
        log.warning("could not record the reconciler's pass: %s", exc)


def note_failure(connection: redis.Redis, exc: BaseException) -> None:
    """Records a failed pass and its error; never raises (the caller re-raises the original)."""
    lines = str(exc).strip().splitlines()  # SQLAlchemy appends the SQL and a link on further lines
    error = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:_ERROR_MAX_CHARS]
    try:
        connection.hset(LAST_RUN_KEY, mapping={"failed_at": _redis_now(connection), "error": error})
    except redis.exceptions.RedisError as record_exc:
        log.warning("could not record the reconciler's failed pass: %s", record_exc)


def read_passes(connection: redis.Redis) -> PassRecord:
    """The record as seen now.

    Raises:
        redis.exceptions.RedisError: Redis cannot be read.
    """
    fields = {_text(key): _text(value) for key, value in connection.hgetall(LAST_RUN_KEY).items()}
    now = _redis_now(connection)

    def ago(name: str) -> float | None:
        return max(0.0, now - float(fields[name])) if name in fields else None

    return PassRecord(ago("succeeded_at"), ago("failed_at"), fields.get("error"))


def reconciler_problem(record: PassRecord, *, interval_s: float, uptime_s: float) -> str | None:
    """What is wrong with the reconciler, or None while its last success is recent.

    Args:
        record: the reconciler's record (`read_passes`).
        interval_s: `RECONCILE_INTERVAL_S`.
        uptime_s: how long the judging process has been up (the start-up grace counts from there).
    """
    limit = late_after_s(interval_s)
    since_success = record.succeeded_s_ago
    if min(since_success if since_success is not None else uptime_s, uptime_s) <= limit:
        return None
    if since_success is None:
        text = f"no successful pass recorded (expected every {interval_s:g} s)"
    else:
        text = f"last successful pass {since_success:.0f} s ago (expected every {interval_s:g} s)"
    if record.failed_s_ago is not None and (since_success is None or record.failed_s_ago < since_success):
        text += f"; last pass failed {record.failed_s_ago:.0f} s ago: {record.error}"
    return text
