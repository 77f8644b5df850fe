"""Callback delivery inside the API process: the `USE_RQ_QUEUE=false` path.

The same attempts as on RQ (`jobs.callbacks.deliver_callback`), the same
backoff with jitter and the same cap, but run here: each attempt in a thread
of its own limiter (`CALLBACK_CONCURRENCY`), never in a job slot
(`BACKGROUND_CONCURRENCY`) nor in the thread pool that serves requests, so a
receiver that never answers slows nothing else. What it cannot give: a hard
stop of an attempt (a thread cannot be killed; `CALLBACK_TIMEOUT_S` bounds
each network wait) and survival of the API process (the reconciler submits
pending callbacks again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

from core.settings import Settings
from jobs import callbacks
from jobs.policy import is_permanent

log = logging.getLogger(__name__)


class InProcessCallbacks:
    """Delivers callbacks on the API's event loop, each attempt in a bounded pool of threads."""

    def __init__(
        self,
        settings: Settings,
        attempt: Callable[[str], Any] = callbacks.deliver_callback,
        record_failure: Callable[[str, BaseException, int | None], None] = callbacks.record_failure,
    ) -> None:
        self._settings = settings
        self._attempt = attempt
        self._record_failure = record_failure
        self._limiter: anyio.CapacityLimiter | None = None
        self._active: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def active_ids(self) -> set[str]:
        return set(self._active)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop deliveries run on; `submit` may then be called from any thread."""
        self._loop = loop

    def submit(self, job_id: str) -> None:
        """Starts delivering the callback of `job_id`, from any thread (a no-op when already delivering)."""
        if self._loop is None:
            raise RuntimeError("InProcessCallbacks.bind(loop) was not called")
        self._loop.call_soon_threadsafe(self._start, job_id)

    def _start(self, job_id: str) -> None:
        if job_id in self._active:
            return
        self._active.add(job_id)
        handle = asyncio.get_running_loop().create_task(self.deliver(job_id), name=f"callback-{job_id}")
        self._tasks.add(handle)
        handle.add_done_callback(self._tasks.discard)

    async def deliver(self, job_id: str) -> None:
        """Attempts until delivered, undeliverable, or the callback is no longer pending."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._settings.callback_concurrency)
        self._active.add(job_id)
        intervals = callbacks.backoff_intervals_s(self._settings)
        retries_left = len(intervals)
        try:
            while True:
                try:
                    await anyio.to_thread.run_sync(self._attempt, job_id, limiter=self._limiter)
                    return
                except Exception as exc:
                    final = is_permanent(exc) or retries_left <= 0
                    retry_in = None if final else intervals[len(intervals) - retries_left]
                    await anyio.to_thread.run_sync(self._record_failure, job_id, exc, retry_in, limiter=self._limiter)
                    if retry_in is None:
                        return
                    retries_left -= 1
                    await asyncio.sleep(retry_in)
        except Exception:
            log.exception("in-process callback of %s stopped; the reconciler submits it again", job_id)
        finally:
            self._active.discard(job_id)

    async def aclose(self) -> None:
        for handle in list(self._tasks):
            handle.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
