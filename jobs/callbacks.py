"""Callback delivery as its own job, off the path of the work it reports.

When a job ends (finished, or failed for good) its row says the
callback is `pending` and a delivery job `callback-<job id>` goes onto
the `callbacks` queue, served by its own workers (`./start_worker.sh -q
callbacks`): a receiver that never answers holds a callback worker for at most
one attempt, never a worker of the other queues. Each attempt is short
(`CALLBACK_TIMEOUT_S`); a failed one is retried by RQ's `Retry` with
exponential backoff and jitter, up to `CALLBACK_MAX_ATTEMPTS` in all (counted
in the database, so a re-enqueued job does not start the count again); then
the callback is `undeliverable`. A refused target or a bad URL is
undeliverable at once. In-process mode (`USE_RQ_QUEUE=false`) runs the same
attempts in the API (`jobs.local_callbacks`), with the same backoff and cap.

At least once: a receiver may see a repeat (a worker killed after the
receiver answered); `webhook-id` is stable per job for de-duplication.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import redis
from rq import Retry
from rq.exceptions import DuplicateJobError
from rq.job import JobStatus

from core.errors import CallbackNotDelivered, CallbackRefused, QueueUnavailable
from core.settings import QUEUE_CALLBACKS, Settings
from jobs.policy import describe_error
from jobs.runtime import get_runtime
from jobs.webhook import deliver
from redis_client import DELIVER_CALLBACK, ON_FAILURE, enqueue_unique, fetch_job

log = logging.getLogger(__name__)

JOB_ID_PREFIX = "callback-"
# RQ's hard stop for one attempt: DNS and a receiver trickling its headers are bounded too.
JOB_TIMEOUT_EXTRA_S = 10
_ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED})


def delivery_id_for(job_id: str) -> str:
    return f"{JOB_ID_PREFIX}{job_id}"


def job_id_of(delivery_id: str) -> str:
    return delivery_id.removeprefix(JOB_ID_PREFIX)


def backoff_intervals_s(settings: Settings, rng: random.Random | None = None) -> list[int]:
    """The waits before retries 1, 2, ...: base x 2^n, capped, each with "equal jitter" (half fixed, half random).

    Computed once per job at enqueue time; whole seconds, as RQ's `Retry` takes them.
    """
    rng = rng or random.SystemRandom()
    intervals = []
    for retry in range(settings.callback_max_attempts - 1):
        ceiling = min(settings.callback_backoff_max_s, settings.callback_backoff_s * 2**retry)
        intervals.append(max(1, math.ceil(ceiling / 2 + rng.uniform(0, ceiling / 2))))
    return intervals


def job_timeout_s(settings: Settings) -> int:
    return math.ceil(2 * settings.callback_timeout_s) + JOB_TIMEOUT_EXTRA_S


def ensure_job(connection: redis.Redis, settings: Settings, job_id: str) -> bool:
    """Puts the delivery job on the callbacks queue unless it is there already; True when enqueued now.

    Idempotent by job id: a job waiting, scheduled for its retry or running is left alone; an ended
    one (its row still pending: its worker died on the last attempt) is replaced.

    Raises:
        QueueUnavailable: Redis cannot be reached or refuses the write.
    """
    delivery_id = delivery_id_for(job_id)
    for _ in range(2):
        intervals = backoff_intervals_s(settings)
        try:
            enqueue_unique(
                connection,
                DELIVER_CALLBACK,
                job_id,
                job_id=delivery_id,
                queue_name=QUEUE_CALLBACKS,
                job_timeout=job_timeout_s(settings),
                retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
                result_ttl=settings.rq_result_ttl,
                failure_ttl=settings.rq_failure_ttl,
                on_failure=ON_FAILURE,
            )
            return True
        except DuplicateJobError:
            try:
                job = fetch_job(delivery_id, connection)
                if job is not None and job.get_status(refresh=False) in _ACTIVE:
                    return False
                if job is not None:
                    job.delete()
            except redis.exceptions.RedisError as exc:
                raise QueueUnavailable(f"Redis is unreachable: {exc}") from exc
    return False


def schedule_delivery(job_id: str) -> None:
    """Hands the callback of an ended job to its deliverer; never raises (the reconciler catches up)."""
    runtime = get_runtime()
    try:
        if runtime.settings.use_rq_queue:
            ensure_job(runtime.redis, runtime.settings, job_id)
        elif runtime.callbacks is not None:
            runtime.callbacks.submit(job_id)
        else:
            log.info("callback of %s left to the reconciler (no in-process deliverer here)", job_id)
    except Exception as exc:
        log.warning("callback of %s not scheduled (%s); the reconciler will", job_id, exc)


def deliver_callback(job_id: str) -> dict[str, Any]:
    """One delivery attempt (the job function); raises when it failed, so that RQ's `Retry` tries again.

    Raises:
        CallbackNotDelivered: the receiver did not answer 2xx in time (retried).
        CallbackRefused: the URL or its target is not allowed (not retried: undeliverable).
    """
    runtime = get_runtime()
    lifecycle = runtime.lifecycle
    attempt = lifecycle.begin_callback_attempt(job_id)
    if attempt is None:
        return {"id": job_id, "skipped": "the callback is not pending"}
    if attempt > runtime.settings.callback_max_attempts:
        # The count lives in the database: a job enqueued again by the reconciler does not reset it.
        lifecycle.record_callback_failure(job_id, "no attempt left", final=True)
        return {"id": job_id, "delivered": False, "attempt": attempt}
    job = lifecycle.require(job_id)
    outcome = deliver(job, runtime.settings)
    if outcome.delivered:
        lifecycle.mark_callback_delivered(job_id)
        return {"id": job_id, "delivered": True, "attempt": attempt}
    error = outcome.error or "not delivered"
    if outcome.permanent:
        raise CallbackRefused(error)
    if attempt >= runtime.settings.callback_max_attempts:
        lifecycle.record_callback_failure(job_id, error, final=True)
        return {"id": job_id, "delivered": False, "attempt": attempt, "error": error}
    raise CallbackNotDelivered(f"attempt {attempt}: {error}")


def record_failure(delivery_id: str, error: BaseException, retry_in_s: int | None) -> None:
    """Records a failed attempt: retried after `retry_in_s`, or (None) undeliverable for good."""
    job_id = job_id_of(delivery_id)
    final = retry_in_s is None
    get_runtime().lifecycle.record_callback_failure(job_id, describe_error(error), final=final)
    if final:
        log.warning("callback of %s undeliverable: %s", job_id, error)
    else:
        log.info("callback of %s not delivered, next attempt in %ss: %s", job_id, retry_in_s, error)


def record_stopped(delivery_id: str) -> None:
    log.info("callback job %s stopped on request", delivery_id)
