"""Runs tasks inside the API process: the `USE_RQ_QUEUE=false` path.

Same contract as on RQ: the same task function, the same retry count and
backoff (`RQ_RETRY_MAX`, `RQ_RETRY_INTERVALS`), the same outcome hooks. What
it cannot give: a hard timeout (a thread cannot be killed; the task stops at
its next progress report instead) and survival of the API process (the
reconciler re-runs jobs whose heartbeat stopped).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import anyio.to_thread

from core.errors import JobCanceled
from core.lifecycle import Lifecycle
from core.models import utcnow
from core.settings import Settings
from tasks.spec import TaskSpec, is_permanent, retry_interval_s

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 10.0  # in-process jobs touch their rows this often so the reconciler leaves them be


class InProcessRunner:
    """A bounded pool of in-process jobs with RQ's retry semantics."""

    def __init__(self, settings: Settings, lifecycle: Lifecycle) -> None:
        self._retry_max = settings.rq_retry_max
        self._intervals = settings.retry_intervals_s
        self._concurrency = settings.background_concurrency
        self._lifecycle = lifecycle
        self._semaphore: asyncio.Semaphore | None = None
        self._waiting: list[str] = []
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def active_ids(self) -> set[str]:
        return set(self._waiting) | self._running

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    def position(self, job_id: str) -> int | None:
        """0-based place among jobs waiting for a free slot; None when not waiting here."""
        return self._waiting.index(job_id) if job_id in self._waiting else None

    def next_position(self) -> int:
        """The place a job submitted now would take: 0 when a slot is free."""
        return len(self._waiting) if len(self._running) >= self._concurrency else 0

    def is_running(self, job_id: str) -> bool:
        return job_id in self._running

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop jobs run on; `submit` may then be called from any thread."""
        self._loop = loop

    def submit(self, task: TaskSpec, job_id: str, at: datetime | None = None) -> None:
        """Starts `run` on the loop, from any thread (for callers outside a request, e.g. the reconciler)."""
        if self._loop is None:
            raise RuntimeError("InProcessRunner.bind(loop) was not called")
        self._loop.call_soon_threadsafe(self._start, task, job_id, at)

    def _start(self, task: TaskSpec, job_id: str, at: datetime | None) -> None:
        handle = asyncio.get_running_loop().create_task(self.run(task, job_id, at), name=f"job-{job_id}")
        self._tasks.add(handle)
        handle.add_done_callback(self._tasks.discard)

    async def run(self, task: TaskSpec, job_id: str, at: datetime | None = None) -> None:
        """Runs `task` for `job_id` until it succeeds, fails for good or is canceled."""
        if job_id in self.active_ids:
            return  # already here: a second copy would only race the first
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._concurrency)
        self._waiting.append(job_id)
        try:
            if at is not None:
                await asyncio.sleep(max(0.0, (at - utcnow()).total_seconds()))
            retries_left = self._retry_max
            while True:
                retry_in = await self._attempt(task, job_id, retries_left)
                if retry_in is None:
                    return
                retries_left -= 1
                self._waiting.append(job_id)
                await asyncio.sleep(retry_in)
        finally:
            while job_id in self._waiting:
                self._waiting.remove(job_id)

    async def _attempt(self, task: TaskSpec, job_id: str, retries_left: int) -> int | None:
        """One run; returns the backoff before the next one, or None when the job is over."""
        assert self._semaphore is not None
        async with self._semaphore:
            self._waiting.remove(job_id)
            self._running.add(job_id)
            try:
                await anyio.to_thread.run_sync(task.func, job_id)
                return None
            except JobCanceled:
                await anyio.to_thread.run_sync(task.record_stopped, job_id)
                return None
            except Exception as exc:
                log.warning("in-process job %s failed: %s", job_id, exc)
                final = is_permanent(exc) or retries_left <= 0
                retry_in = None if final else retry_interval_s(self._intervals, retries_left)
                await anyio.to_thread.run_sync(task.record_failure, job_id, exc, retry_in)
                return retry_in
            finally:
                self._running.discard(job_id)

    async def heartbeat(self) -> None:
        """Touches the rows of jobs held here, forever (run as a background task)."""
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
            ids = self.active_ids
            if ids:
                try:
                    await anyio.to_thread.run_sync(self._lifecycle.touch, ids)
                except Exception:
                    log.exception("heartbeat of in-process jobs failed")

    async def aclose(self) -> None:
        for handle in list(self._tasks):
            handle.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
