"""Server-sent events of one analysis: status, progress and log lines, in order, to the end.

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

from app.schemas import AnalysisOut
from core.models import Analysis
from core.notify import channel_for

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    status: str | None = None
    attempt: int = -1
    progress: int = -1
    log_seq: int = 0
    events: list[ServerSentEvent] = field(default_factory=list)


def _status_event(analysis: Analysis) -> ServerSentEvent:
    return ServerSentEvent(AnalysisOut.of(analysis).model_dump_json(), event="status")


def changes(analysis: Analysis, seen: _Seen) -> list[ServerSentEvent]:
    """The events that take a client from `seen` to `analysis`; updates `seen`."""
    status_changed = analysis.status.value != seen.status
    logs = [
        ServerSentEvent(_json({"seq": line["seq"], "at": line["at"], "message": line["message"]}), event="log")
        for line in analysis.logs
        if line["seq"] > seen.log_seq
    ]
    progress: list[ServerSentEvent] = []
    if (analysis.attempts, analysis.progress) != (seen.attempt, seen.progress):
        data = {"progress": analysis.progress, "attempt": analysis.attempts}
        progress.append(ServerSentEvent(_json(data), event="progress"))
    status = [_status_event(analysis)] if status_changed else []
    seen.status = analysis.status.value
    seen.attempt, seen.progress = analysis.attempts, analysis.progress
    seen.log_seq = max([seen.log_seq, *(line["seq"] for line in analysis.logs)])
    # A terminal status closes the stream, so it comes last; any other status opens what follows.
    return [*logs, *progress, *status] if analysis.status.is_terminal else [*status, *logs, *progress]


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data)


async def analysis_events(
    analysis_id: str,
    load: Callable[[str], Analysis | None],
    connection: redis.asyncio.Redis | None,
    poll_interval_s: float,
) -> AsyncIterator[ServerSentEvent]:
    """Yields the analysis' events until it reaches a terminal state."""
    pubsub = None
    if connection is not None:
        try:
            pubsub = connection.pubsub()
            await pubsub.subscribe(channel_for(analysis_id))
        except (redis.exceptions.RedisError, OSError) as exc:
            log.info("events of %s fall back to polling: %s", analysis_id, exc)
            pubsub = None
    seen = _Seen()
    try:
        first = True
        while True:
            analysis = await anyio.to_thread.run_sync(load, analysis_id)
            if analysis is None:
                return
            if first:
                # The current state, whatever happened before the client connected; if it has ended,
                # that is all there is to say.
                yield _status_event(analysis)
                if analysis.status.is_terminal:
                    return
                seen.status = analysis.status.value
                first = False
            for event in changes(analysis, seen):
                yield event
            if analysis.status.is_terminal:
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
