"""Server-sent events of one job: status, progress and log lines, in order, to the end.

The stream is derived from the database row, which every run updates: each
change notification (Redis pub/sub) or, failing that, a poll timer makes it
re-read the row and send what changed. So a late client still gets the
current state first, nothing is sent twice, and a lost notification only
costs a poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import redis.asyncio
from sse_starlette import ServerSentEvent

from core.models import Job
from core.notify import channel_for

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    status: str | None = None
    attempt: int = -1
    progress: int = -1
    log_seq: int = 0
    events: list[ServerSentEvent] = field(default_factory=list)


# Loads a job's row and the body of its `status` event (e.g. `GET /jobs/{id}`'s or `GET /audio/{id}`'s).
View = Callable[[str], tuple[Job, str] | None]


def _status_event(body: str) -> ServerSentEvent:
    return ServerSentEvent(body, event="status")


def changes(job: Job, status_body: str, seen: _Seen) -> list[ServerSentEvent]:
    """The events that take a client from `seen` to the job `job`; updates `seen`."""
    status_changed = job.status.value != seen.status
    logs = [
        ServerSentEvent(_json({"seq": line["seq"], "at": line["at"], "message": line["message"]}), event="log")
        for line in job.logs
        if line["seq"] > seen.log_seq
    ]
    progress: list[ServerSentEvent] = []
    if (job.attempts, job.progress) != (seen.attempt, seen.progress):
        data = {"progress": job.progress, "attempt": job.attempts}
        progress.append(ServerSentEvent(_json(data), event="progress"))
    status = [_status_event(status_body)] if status_changed else []
    seen.status = job.status.value
    seen.attempt, seen.progress = job.attempts, job.progress
    seen.log_seq = max([seen.log_seq, *(line["seq"] for line in job.logs)])
    # A terminal status closes the stream, so it comes last; any other status opens what follows.
    return [*logs, *progress, *status] if job.status.is_terminal else [*status, *logs, *progress]


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data)


async def job_events(
    job_id: str,
    view: View,
    connection: redis.asyncio.Redis | None,
    poll_interval_s: float,
) -> AsyncIterator[ServerSentEvent]:
    """Yields the job's events until it reaches a terminal state."""
    pubsub = None
    if connection is not None:
        try:
            pubsub = connection.pubsub()
            await pubsub.subscribe(channel_for(job_id))
        except (redis.exceptions.RedisError, OSError) as exc:
            log.info("events of %s fall back to polling: %s", job_id, exc)
            pubsub = None
    seen = _Seen()
    try:
        first = True
        while True:
            viewed = await anyio.to_thread.run_sync(view, job_id)
            if viewed is None:
                return
            job, status_body = viewed
            if first:
                # The current state, whatever happened before the client connected; if it has ended,
                # that is all there is to say.
                yield _status_event(status_body)
                if job.status.is_terminal:
                    return
                seen.status = job.status.value
                first = False
            for event in changes(job, status_body, seen):
                yield event
            if job.status.is_terminal:
                return
            await _wait_for_change(pubsub, poll_interval_s)
    finally:
        if pubsub is not None:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _wait_for_change(pubsub: Any, timeout_s: float) -> None:
    if pubsub is None:
        await asyncio.sleep(timeout_s)
        return
    try:
        await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout_s)
    except (redis.exceptions.RedisError, OSError):
        await asyncio.sleep(timeout_s)
