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
number of such threads bounds the memory the API keeps after a burst. Jobs wait
for a free thread in the runner's waiting line (`jobs.waiting_line`): by priority
level, then by arrival, as RQ's workers drain the priority queues.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread

from core.errors import JobCanceled, JobInterrupted
from core.lifecycle import Lifecycle
from core.models import Job, Priority, utcnow
from core.settings import Settings, intervals_for
from jobs import execute
from jobs.dependencies import register_holder
from jobs.limits import LocalGate
from jobs.policy import is_permanent, retry_interval_s
from jobs.waiting_line import WaitingLine, rank_of

log = logging.getLogger(__name__)

# Every runner of this process, so the server can tell them it is stopping (`stop_waiting_everywhere`).
_RUNNERS: weakref.WeakSet[InProcessRunner] = weakref.WeakSet()

HEARTBEAT_INTERVAL_S = 10.0  # in-process jobs touch their rows this often so the reconciler leaves them be
THREAD_NAME_PREFIX = "in-process-job"


@dataclass
class _Job:
    """A job held by this process, from its submission until its last attempt has ended."""

    job_id: str
    at: datetime | None
    retries_left: int
    intervals: tuple[int, ...]
    rank: int = Priority.NORMAL.rank  # its priority level, 0 the highest
    task: str = ""
    key: str | None = None  # its ordering key
    noted: str | None = None  # what held it back last, as logged on its row
    attempt: Future[int | None] | None = None  # the attempt in line or running, if any
    released: Future[None] | None = None  # set for a deferred job: done once its dependencies let it go
    ended: Future[None] = field(default_factory=Future)
    driver: asyncio.Task[None] | None = None  # follows it on the runner's loop (`_drive`)


class InProcessRunner:
    """A bounded pool of in-process jobs with RQ's retry semantics."""

    def __init__(self, settings: Settings, lifecycle: Lifecycle) -> None:
        self._concurrency = settings.background_concurrency
        self._lifecycle = lifecycle
        # Guards what follows: jobs are submitted from request threads, started on pool threads.
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._line = WaitingLine()  # the head is the next to run
        self._running: set[str] = set()
        self._gate = LocalGate.empty()
        self._parked = 0  # pool tasks that found no job its limits let start; woken when one ends
        self._pool: ThreadPoolExecutor | None = None
        self._drivers: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()  # running jobs stop at their next progress report
        self._left: set[str] = set()  # jobs dropped because the process is stopping (for `aclose`)
        self._released_waits = asyncio.Event()  # requests stop waiting for their jobs
        self._reconcile_grace_s = settings.reconcile_grace_s
        _RUNNERS.add(self)
        register_holder(self)

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
        return len(self._line)

    def position(self, job_id: str) -> int | None:
        """0-based place among jobs waiting for a free thread; None when not waiting here."""
        with self._lock:
            return self._line.place(job_id)

    def reprioritize(self, job_id: str, priority: Priority) -> bool:
        """Gives a job held here another priority: a waiting one moves behind the jobs waiting at its new
        level (as on RQ, where it goes to the tail of that level's queue); a scheduled or backing-off one
        joins the line at that level when it is due.

        Returns:
            False when the job is not held here or is running.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job_id in self._running:
                return False
            job.rank = priority.rank
            self._line.move(job_id, job.rank)
            return True

    def is_running(self, job_id: str) -> bool:
        return job_id in self._running

    def drop(self, job_id: str) -> bool:
        """Lets go of a canceled job held here that is neither running nor in line (scheduled, deferred, or
        backing off before a retry), from any thread: the runner forgets it, and whatever waits for it (the
        request's background task, hence a server's graceful shutdown) stops waiting now, not at its due time.

        Returns:
            False when the job is not held here, or is running or in line (its attempt sees the canceled row).
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or self._loop is None or not _idle(job):
                return False
        self._loop.call_soon_threadsafe(self._stop_driver, job)
        return True

    def _stop_driver(self, job: _Job) -> None:
        with self._lock:
            idle = _idle(job)  # else it came due meanwhile: its attempt sees the canceled row
        if idle and job.driver is not None:
            job.driver.cancel()  # `_forget` then lets the job go and ends its waits

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that follows jobs (backoff, schedule); `submit` may then be called from any thread."""
        self._loop = loop

    def submit(self, row: Job, at: datetime | None = None, *, deferred: bool = False) -> int | None:
        """Takes a job in, from any thread: it joins the line now unless it is scheduled for later or
        `deferred` (it waits for jobs it depends on: `release` lets it go).

        Returns:
            Its 0-based place among waiting jobs (as RQ's `Job.get_position`); None when scheduled or deferred.
            A job held here already is not taken twice: its current place is returned.
        """
        if self._loop is None:
            raise RuntimeError("InProcessRunner.bind(loop) was not called")
        job_id = row.id
        with self._lock:
            held = self._jobs.get(job_id)
            if held is not None:
                return self._line.place(job_id)
            at = at if at is not None and at > utcnow() else None
            intervals = intervals_for(row.retries, row.retry_intervals)
            job = _Job(job_id, at, row.retries, intervals, rank_of(row), row.task, row.ordering_key)
            job.released = Future() if deferred else None
            self._jobs[job_id] = job
            self._gate.join(job_id, job.key)
            position = None if job.at is not None or deferred else self._line_up(job)
        self._loop.call_soon_threadsafe(self._follow, job)
        return position

    def release(self, job_id: str) -> bool:
        """Lets a deferred job held here go (from any thread): it joins the line (or waits for its schedule).
        Its attempt finds out from the row whether to run (a canceled dependent does not).

        Returns:
            False when the job is not held here as deferred (or was released already).
        """
        with self._lock:
            job = self._jobs.get(job_id)
            released = job.released if job is not None else None
            if released is None or released.done():
                return False
            released.set_result(None)
            return True

    async def wait(self, job_id: str) -> None:
        """Returns once the job has ended here (at once when it is not held here), or once the server stops.

        A request's `BackgroundTasks` wait here, as they would for their own tasks; when the server stops,
        they stop waiting (`stop_waiting`, or the server cancelling them) and the runner's own shutdown
        (`aclose`) decides what becomes of the job.
        """
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or self._released_waits.is_set():
            return
        released: asyncio.Future[Any] = asyncio.ensure_future(self._released_waits.wait())
        ended: asyncio.Future[Any] = asyncio.wrap_future(job.ended)
        try:
            await asyncio.wait({released, ended}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            return  # the server gave up waiting: the job stays with the runner, nothing to report
        finally:
            released.cancel()

    def stop_waiting(self) -> None:
        """The server is shutting down: requests stop waiting for their in-process jobs, no attempt starts
        any more, and running ones stop at their next checkpoint (`aclose` then hands the jobs on)."""
        self._stopping.set()
        self._released_waits.set()

    async def run(self, row: Job, at: datetime | None = None) -> None:
        """Submits the job and waits until it succeeds, fails for good or is canceled."""
        if self._loop is None:
            self.bind(asyncio.get_running_loop())
        self.submit(row, at)
        await self.wait(row.id)

    def _line_up(self, job: _Job) -> int:
        """Puts the job's next attempt in line, behind those of its level and above (called with the lock
        held); returns its place. Each job in line has one pool task, which runs the head of the line."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix=THREAD_NAME_PREFIX)
        place = self._line.join(job.job_id, job.rank)
        job.attempt = Future()
        self._pool.submit(self._run_head)
        return place

    def _run_head(self) -> None:
        """On a free pool thread: runs the next attempt of the job at the head of the line."""
        with self._lock:
            job, held_back = self._next_startable()
            if job is not None:
                self._gate.started(job.task)
        for job_id, reason in held_back:
            try:
                self._lifecycle.log(job_id, reason)
            except Exception:
                log.exception("in-process job %s: why it waits was not logged", job_id)
        if job is None:
            return
        try:
            self._run_attempt(job)
        finally:
            with self._lock:
                self._gate.ended(job.task)
            self._wake()

    def _next_startable(self) -> tuple[_Job | None, list[tuple[str, str]]]:
        """Takes the first job of the line that its limits let start (called with the lock held); returns
        it and the jobs before it held back for a new reason, with the reason."""
        job_id, held_back = self._line.take_first(self._jobs, self._gate)
        if job_id is not None:
            return self._jobs.get(job_id), held_back
        if self._line:
            self._parked += 1  # every waiting job is held back by its limits: one that ends wakes this up
        return None, held_back

    def _wake(self) -> None:
        """A slot or a key's turn freed: the pool tasks that found nothing startable look again."""
        with self._lock:
            parked, self._parked = self._parked, 0
            pool = self._pool
        if pool is not None and not self._stopping.is_set():
            for _ in range(parked):
                pool.submit(self._run_head)

    def _run_attempt(self, job: _Job) -> None:
        if job.attempt is None or not job.attempt.set_running_or_notify_cancel():
            return  # its driver was canceled (shutdown) while it waited
        attempt = job.attempt
        try:
            outcome: int | BaseException | None = self._attempt(job, attempt)
        except BaseException as exc:
            outcome = exc
        with self._lock:
            if attempt.done():
                return  # abandoned as stuck (`abandon`): its outcome was recorded then
            if isinstance(outcome, BaseException):
                attempt.set_exception(outcome)
            else:
                attempt.set_result(outcome)

    def abandon(self, job_id: str, error: BaseException) -> bool:
        """Gives up on a stuck attempt (running past its timeout): it counts as failed now, and the job is
        retried by its policy or fails. A thread cannot be killed: the old run goes on until its next
        progress report (where it stops) or its end, holding its thread; what it writes then loses to the
        newer state, or is the job's one result (tasks are idempotent).

        Returns:
            False when the job is not running here (or was abandoned already).
        """
        with self._lock:
            job = self._jobs.get(job_id)
            attempt = job.attempt if job is not None else None
            if job is None or attempt is None or attempt.done() or job_id not in self._running:
                return False
            self._running.discard(job_id)
        retry_in = None if job.retries_left <= 0 else retry_interval_s(job.intervals, job.retries_left)
        execute.record_failure(job_id, error, retry_in)
        with self._lock:
            if not attempt.done():
                attempt.set_result(retry_in)
        return True

    def _follow(self, job: _Job) -> None:
        driver = asyncio.get_running_loop().create_task(self._drive(job), name=f"job-{job.job_id}")
        job.driver = driver
        self._drivers.add(driver)
        driver.add_done_callback(self._drivers.discard)
        # Not in `_drive`'s `finally`: a driver canceled before its first step never runs its body.
        driver.add_done_callback(lambda _: self._forget(job))

    async def _drive(self, job: _Job) -> None:
        """Waits for the schedule, each attempt and each backoff, until the job is over (then `_forget`)."""
        try:
            if job.released is not None:
                await asyncio.wrap_future(job.released)
                if job.at is None:
                    with self._lock:
                        self._line_up(job)
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

    def _forget(self, job: _Job) -> None:
        """Its driver is done (the job is over, dropped or the runner is closing): the job leaves the runner."""
        with self._lock:
            self._jobs.pop(job.job_id, None)
            while self._line.leave(job.job_id):
                pass
            self._gate.leave(job.job_id, job.key)
        self._wake()
        job.attempt = None
        if not job.ended.done():
            job.ended.set_result(None)

    def _attempt(self, job: _Job, attempt: Future[int | None]) -> int | None:
        """One run, on a pool thread; returns the backoff before the next one, or None when the job is over."""
        job_id = job.job_id
        with self._lock:
            if self._stopping.is_set():
                self._left.add(job_id)
                return None  # the process is stopping: the job goes to the next one untouched
            self._running.add(job_id)
        try:
            execute.run_job(job_id, interrupted=lambda: self._stopping.is_set() or attempt.done())
            return None
        except JobInterrupted:
            if not attempt.done():  # else abandoned as stuck: nothing more to record
                with self._lock:
                    self._left.add(job_id)
            return None  # the process is stopping: `aclose` hands the job to the next one
        except JobCanceled:
            if not attempt.done():
                execute.record_stopped(job_id)
            return None
        except Exception as exc:
            if attempt.done():
                return None  # abandoned as stuck: its failure was recorded then
            log.warning("in-process job %s failed: %s", job_id, exc)
            final = is_permanent(exc) or job.retries_left <= 0
            retry_in = None if final else retry_interval_s(job.intervals, job.retries_left)
            execute.record_failure(job_id, exc, retry_in)
            return retry_in
        finally:
            with self._lock:
                # Else a newer attempt of the job runs now; None: the job was let go (`_forget`, e.g. by
                # `aclose`, which waits for the running ones to end).
                if job.attempt is attempt or job.attempt is None:
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

    async def aclose(self, grace_s: float = 0.0) -> None:
        """Stops deliberately: takes no new job, lets running ones reach a checkpoint within `grace_s`, and
        hands every unfinished job it held to the next process (its row `pending`, due at once for the
        reconciler); logs one line with the counts.
        """
        self._stopping.set()
        self._released_waits.set()
        with self._lock:
            held = set(self._jobs) | self._left
            running = set(self._running)
        for driver in list(self._drivers):
            driver.cancel()  # schedules and backoffs stop here
        await asyncio.gather(*self._drivers, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)  # attempts still in line never start
        deadline = time.monotonic() + grace_s
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        still_running = set(self._running)
        with self._lock:
            held |= self._left
        released: list[str] = []
        if held:
            due = utcnow() - timedelta(seconds=self._reconcile_grace_s + 1)
            try:
                released = await anyio.to_thread.run_sync(self._lifecycle.release, held, due)
            except Exception:
                log.exception("in-process jobs not released; the reconciler takes them after its grace period")
        if held:
            log.info(
                "in-process runner stopped: %d job(s) unfinished, %d running at the stop (%d still running after "
                "%gs), %d handed to the next process",
                len(held),
                len(running),
                len(still_running),
                grace_s,
                len(released),
            )


def _idle(job: _Job) -> bool:
    """The job has no attempt in line or running: it waits for its schedule, its dependencies or a backoff."""
    return job.attempt is None or job.attempt.done()


def stop_waiting_everywhere() -> None:
    """The server is stopping: requests waiting for in-process jobs stop waiting, in every runner."""
    for runner in list(_RUNNERS):
        runner.stop_waiting()
