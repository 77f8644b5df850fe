"""`/batches/{id}`: a batch's progress and results, once or as server-sent events until every job ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from core.errors import NotFound
from jobs.batches import Batches, BatchState
from jobs.web.deps import JobServicesDep
from jobs.web.schemas import ErrorOut

router = APIRouter(prefix="/batches", tags=["batches"])

BatchId = Annotated[str, Path(min_length=1, max_length=64, description="The batch id")]
SSE_PING_S = 15  # keeps proxies from closing an idle stream
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "Unknown id"}}


class BatchItemOut(BaseModel):
    """One item of a batch: its job's status, progress and result, or (`rejected`) why it was refused."""

    name: str
    job_id: str | None
    status: str
    progress: int
    result: Any = None
    error: str | None = None
    status_code: int | None = None  # for a rejected item: the status a lone upload of it would get


class BatchOut(BaseModel):
    """A batch: counts per status, overall percent (its jobs' mean progress), `done` once every job ended."""

    id: str
    task: str
    created_at: datetime
    total: int
    counts: dict[str, int]
    percent: int
    done: bool
    items: list[BatchItemOut]

    @classmethod
    def of(cls, state: BatchState) -> BatchOut:
        return cls(
            id=state.id,
            task=state.task,
            created_at=state.created_at,
            total=len(state.items),
            counts=state.counts,
            percent=state.percent,
            done=state.done,
            items=[BatchItemOut.model_validate(item, from_attributes=True) for item in state.items],
        )


def _require(batches: Batches, batch_id: str) -> BatchState:
    state = batches.state(batch_id)
    if state is None:
        raise NotFound(f"no batch with id {batch_id!r}")
    return state


@router.get("/{batch_id}", response_model=BatchOut, responses=NOT_FOUND)
def get_batch(batch_id: BatchId, services: JobServicesDep) -> BatchOut:
    """Read a batch: counts per status, overall percent, and each item's status and result."""
    return BatchOut.of(_require(Batches(services.database), batch_id))


async def batch_events(batches: Batches, batch_id: str, poll_interval_s: float) -> AsyncIterator[ServerSentEvent]:
    """A `progress` event with the whole batch now, then one whenever it changes, until it is done."""
    sent = None
    while True:
        state = await anyio.to_thread.run_sync(batches.state, batch_id)
        if state is None:
            return
        body = BatchOut.of(state).model_dump_json()
        if body != sent:
            yield ServerSentEvent(body, event="progress")
            sent = body
        if state.done:
            return
        await asyncio.sleep(poll_interval_s)


@router.get(
    "/{batch_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The batch's progress"}, **NOT_FOUND},
)
async def batch_event_stream(batch_id: BatchId, services: JobServicesDep) -> EventSourceResponse:
    """Follow a batch: a `progress` event (the batch, as `GET /batches/{id}`) at each change until all end."""
    batches = Batches(services.database)
    await anyio.to_thread.run_sync(_require, batches, batch_id)
    events = batch_events(batches, batch_id, services.settings.sse_poll_interval_s)
    return EventSourceResponse(events, ping=SSE_PING_S)
