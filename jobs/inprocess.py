"""Runs tasks inside the API process: the `USE_RQ_QUEUE=false` path.

Same contract as on RQ: the same attempt (`jobs.execute.run_job`), the job's
own retry count and backoff, the same outcome records. `async def` tasks run
to completion on an event loop of their own in the pool thread, as on a worker. What
it cannot give: a hard timeout (a thread cannot be killed; the task stops at
its next progress report instead) and survival of the API process (the
reconciler re-runs jobs whose heartbeat stopped).

Job bodies run on a pool of its own, `BACKGROUND_CONCURRENCY` threads, never on
the thread pool that serves requests (anyio's, up to 40 threads): each thread
that runs an analysis keeps a malloc arena with the analysis' buffers, so the
number of such threads bounds the memory the API keeps after a burst. The
pool's queue is the waiting line: a job joins it when it is submitted (before
the upload is answered), and its position is its place in that line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import anyio.to_thread

from core.errors import JobCanceled
from core.lifecycle import Lifecycle
from core.models import Job, utcnow
from core.settings import Settings, intervals_for
from jobs import execute
from jobs.policy import is_permanent, retry_interval_s

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 10.0  # in-process jobs touch their rows this often so the reconciler leaves them be
THREAD_NAME_PREFIX = "in-process-job"


@dataclass
class _Job:
    """A job held by this process, from its submission until its last attempt has ended."""

    job_id: str
    at: datetime | None
    retries_left: int
    intervals: tuple[int, ...]
    attempt: Future[int | None] | None = None  # the attempt in line or running, if any
    ended: Future[None] = field(default_factory=Future)


class InProcessRunner:
    """A bounded pool of in-process jobs with RQ's retry semantics."""

    def __init__(self, settings: Settings, lifecycle: Lifecycle) -> None:
        self._concurrency = settings.background_concurrency
        self._lifecycle = lifecycle
        # Guards what follows: jobs are submitted from request threads, started on pool threads.
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._waiting: list[str] = []  # in the pool's queue, in its order
        self._running: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._drivers: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def active_ids(self) -> set[str]:
        """Jobs held here: waiting, running, scheduled or backing off before a retry."""
        with self._lock:
            return set(self._jobs)

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    def position(self, job_id: str) -> int | None:
        """0-based place among jobs waiting for a free thread; None when not waiting here."""
        with self._lock:
            return self._waiting.index(job_id) if job_id in self._waiting else None

    def is_running(self, job_id: str) -> bool:
        return job_id in self._running

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that follows jobs (backoff, schedule); `submit` may then be called from any thread."""
        self._loop = loop

    def submit(self, row: Job, at: datetime | None = None) -> int | None:
        """Takes a job in, from any thread: it joins the line now unless it is scheduled for later.

        Returns:
            Its 0-based place among waiting jobs (as RQ's `Job.get_position`); None when scheduled.
            A job held here already is not taken twice: its current place is returned.
        """
        if self._loop is None:
            raise RuntimeError("InProcessRunner.bind(loop) was not called")
        job_id = row.id
        with self._lock:
            held = self._jobs.get(job_id)
            if held is not None:
                return self._waiting.index(job_id) if job_id in self._waiting else None
            at = at if at is not None and at > utcnow() else None
            job = _Job(job_id, at, row.retries, intervals_for(row.retries, row.retry_intervals))
            self._jobs[job_id] = job
            position = None if job.at is not None else self._line_up(job)
        self._loop.call_soon_threadsafe(self._follow, job)
        return position

    async def wait(self, job_id: str) -> None:
        """Returns once the job has ended here (at once when it is not held here)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            await asyncio.wrap_future(job.ended)

    async def run(self, row: Job, at: datetime | None = None) -> None:
        """Submits the job and waits until it succeeds, fails for good or is canceled."""
        if self._loop is None:
            self.bind(asyncio.get_running_loop())
        self.submit(row, at)
        await self.wait(row.id)

    def _line_up(self, job: _Job) -> int:
        """Puts the job's next attempt at the end of the line (called with the lock held); returns its place."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix=THREAD_NAME_PREFIX)
        self._waiting.append(job.job_id)
        job.attempt = self._pool.submit(self._attempt, job)
        return len(self._waiting) - 1

    def _follow(self, job: _Job) -> None:
        driver = asyncio.get_running_loop().create_task(self._drive(job), name=f"job-{job.job_id}")
        self._drivers.add(driver)
        driver.add_done_callback(self._drivers.discard)

    async def _drive(self, job: _Job) -> None:
        """Waits for the schedule, each attempt and each backoff, until the job is over; then forgets it."""
        try:
            if job.at is not None:
                await asyncio.sleep(max(0.0, (job.at - utcnow()).total_seconds()))
                with self._lock:
                    self._line_up(job)
            while True:
                assert job.attempt is not None
                retry_in = await asyncio.wrap_future(job.attempt)
                if retry_in is None:
                    return
                job.retries_left -= 1
                await asyncio.sleep(retry_in)
                with self._lock:
                    self._line_up(job)
        except Exception:
            log.exception("in-process job %s stopped unexpectedly; the reconciler will take it up", job.job_id)
        finally:
            with self._lock:
                self._jobs.pop(job.job_id, None)
                while job.job_id in self._waiting:
                    self._waiting.remove(job.job_id)
            job.attempt = None
            if not job.ended.done():
                job.ended.set_result(None)

    def _attempt(self, job: _Job) -> int | None:
        """One run, on a pool thread; returns the backoff before the next one, or None when the job is over."""
        job_id = job.job_id
        with self._lock:
            if job_id in self._waiting:  # else its driver was canceled (shutdown) while it waited
                self._waiting.remove(job_id)
            self._running.add(job_id)
        try:
            execute.run_job(job_id)
            return None
        except JobCanceled:
            execute.record_stopped(job_id)
            return None
        except Exception as exc:
            log.warning("in-process job %s failed: %s", job_id, exc)
            final = is_permanent(exc) or job.retries_left <= 0
            retry_in = None if final else retry_interval_s(job.intervals, job.retries_left)
            execute.record_failure(job_id, exc, retry_in)
            return retry_in
        finally:
            with self._lock:
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
        """Stops following jobs; attempts still in line are dropped (their rows stay for the reconciler)."""
        for driver in list(self._drivers):
            driver.cancel()
        await asyncio.gather(*self._drivers, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
