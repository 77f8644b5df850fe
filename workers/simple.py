"""The no-fork ("warm") worker (`WORKER_MODE=simple`, `start_worker.sh --no-fork`): RQ's `SimpleWorker`.

A job runs in the worker process itself: no fork, no cold child, the runtime (engine, Redis client,
compiled statements, imported modules) stays warm from one job to the next. What a fork gave for free
is done here instead:

- the lease: a thread renews the running job's heartbeat every `WORKER_JOB_MONITORING_INTERVAL_S` (a forking
  worker's parent does it while the horse works), so a dead worker's job is found as soon as in fork mode;
- hard timeouts: RQ's SIGALRM death penalty stops Python code; code it cannot reach (C code, SIGALRM
  blocked) is the pool's watchdog's: the deadline goes into the slot the pool watches (`workers.watchdog`);
- stop and kill commands (cancel, the reconciler's stuck-job stop): the job is interrupted in the main
  thread by a signal, at its next Python instruction;
- state between jobs: the signal mask and the working directory are put back after each job;
- leaks: the worker exits after `WORKER_MAX_JOBS` jobs (RQ's own `max_jobs`) or after a job that leaves
  it above `WORKER_MAX_MEMORY_MB` resident; the pool starts a fresh one.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from redis.client import Pipeline
from rq import SimpleWorker
from rq.callbacks import execute_stopped_callback
from rq.command import parse_payload
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.worker.base import WorkerStatus

from core.errors import JobCanceled, WorkHorseDied
from core.settings import get_settings
from workers.watchdog import current_slot
from workers.worker import KitWorkerBase

# Sent by the worker to its own main thread to interrupt the job it runs (RQ's stop-job, kill-horse).
INTERRUPT_SIGNAL = signal.SIGUSR1
INTERRUPT_RETRY_S = 0.2
INTERRUPT_TRIES = 50
_MB = 1024 * 1024
# A write of the worker's registration repeated within this long (the same turn of RQ's loop) is not sent
# again: its TTL is worker_ttl + 60 s, so the registration lives at most this much less than with RQ's own.
REPEAT_WRITE_S = 1.0


def resident_mb() -> float:
    """This process's resident memory now (Linux `/proc`; elsewhere its peak, from getrusage)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MB
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class KitSimpleWorker(KitWorkerBase, SimpleWorker):
    """RQ's `SimpleWorker` with the kit's defaults (`KitWorkerBase`), a kept lease, the watchdog's slot,
    interruptible jobs and recycling."""

    def __init__(self, queues: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(queues, *args, **kwargs)
        settings = get_settings()
        self.watchdog_grace_s = settings.worker_watchdog_grace_s
        self.max_jobs = settings.worker_max_jobs
        self.max_memory_mb = settings.worker_max_memory_mb
        self._interruption: BaseException | None = None
        self._leased: tuple[Job, Execution] | None = None
        self._leases_done = threading.Event()
        self._lease_thread: threading.Thread | None = None
        self._interruptible_job_id: str | None = None
        self._signal_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        self._directory = os.getcwd()
        self._renewed: tuple[float, int] = (0.0, 0)  # the last renewal sent: when (monotonic), its TTL
        self._state_written: tuple[float, str | None] = (0.0, None)  # the last state written alone: when, which

    def work(self, *args: Any, **kwargs: Any) -> bool:
        if self.max_jobs:
            kwargs.setdefault("max_jobs", self.max_jobs)  # RQ's own: the loop ends after that many jobs
        signal.signal(INTERRUPT_SIGNAL, signal.SIG_IGN)  # only a job's own run takes it (`_interruptible`)
        return bool(super().work(*args, **kwargs))

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """The lease runs to the watchdog's deadline (timeout + grace), not to the timeout: past the
        timeout the job is still running (in code the alarm cannot reach) until the watchdog kills it."""
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            left = max(job.timeout + self.watchdog_grace_s - working_time, 0)
            return int(min(left, interval)) + self.lease_margin_s
        return int(interval) + self.lease_margin_s

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's renewal of the worker's registration (`last_heartbeat`, its key's and its executions' TTL), its
        three writes sent as one pipeline; one that repeats a renewal sent less than `REPEAT_WRITE_S` ago with
        a TTL at least as long is not sent again (RQ's loop renews it three times per job, ms apart)."""
        ttl = timeout or self.worker_ttl + 60  # RQ's default
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        if ttl <= self._renewed[1] and time.monotonic() - self._renewed[0] < REPEAT_WRITE_S:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipe)
            pipe.execute()
        self._renewed = (time.monotonic(), ttl)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """RQ's, except that the state this worker wrote less than `REPEAT_WRITE_S` ago is not written again
        (RQ's loop writes `idle` twice between two jobs)."""
        written_at, written = self._state_written
        if pipeline is None and state == written and time.monotonic() - written_at < REPEAT_WRITE_S:
            self._state = state
            return
        super().set_state(state, pipeline)
        self._state_written = (time.monotonic(), state) if pipeline is None else (0.0, None)

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        slot = current_slot()
        if slot is not None:
            timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
            slot.start(job.id, execution.id, job.origin, timeout, self.watchdog_grace_s)
        job.perform = self._interruptible(job, job.perform)  # type: ignore[method-assign]
        if self._lease_thread is None:
            self._lease_thread = threading.Thread(target=self._keep_leases, name="lease", daemon=True)
            self._lease_thread.start()
        self._leased = (job, execution)
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._leased = None
            if slot is not None:
                slot.clear()
            self._restore_process_state()
        with self.connection.pipeline(transaction=False) as pipe:  # the loop's next renewal goes with it
            self.set_state(WorkerStatus.IDLE, pipe)
            self.heartbeat(pipeline=pipe)
            pipe.execute()
        now = time.monotonic()
        self._state_written, self._renewed = (now, WorkerStatus.IDLE), (now, self.worker_ttl + 60)
        self._recycle_if_bloated()

    def _keep_leases(self) -> None:
        """The lease thread's loop: renews the running job's lease (and the worker's registration) every
        monitoring interval, as RQ's forking worker does from the parent (`maintain_heartbeats`). One
        thread for the worker's life: a job never waits for it to start or stop."""
        while not self._leases_done.wait(self.job_monitoring_interval):
            leased = self._leased
            if leased is None:
                continue
            try:
                self.maintain_heartbeats(*leased)
            except Exception as exc:  # Redis away for a moment: the next beat tries again
                self.log.warning("Worker %s: heartbeat of job %s failed: %s", self.name, leased[0].id, exc)

    def teardown(self) -> None:
        self._leases_done.set()
        super().teardown()  # type: ignore[no-untyped-call]

    def _interruptible(self, job: Job, perform: Callable[[], Any]) -> Callable[[], Any]:
        """`job.perform`, during which `INTERRUPT_SIGNAL` raises the pending interruption (`kill_horse`)."""

        def interrupt(signum: int, frame: FrameType | None) -> None:
            error, self._interruption = self._interruption, None
            if error is not None and self._interruptible_job_id == job.id:
                raise error

        def run() -> Any:
            self._interruptible_job_id = job.id
            signal.signal(INTERRUPT_SIGNAL, interrupt)
            try:
                return perform()
            finally:
                signal.signal(INTERRUPT_SIGNAL, signal.SIG_IGN)
                self._interruptible_job_id = None
                self._interruption = None

        return run

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """RQ's stop-job / stop-execution (cancel) and kill-horse (the reconciler's stuck-job stop): the
        "horse" is this process's main thread, interrupted at its next Python instruction."""
        job_id = self._interruptible_job_id
        if job_id is None:
            return
        if self._stopped_job_id == job_id:
            self._interruption = JobCanceled("stopped on request")
        else:
            self._interruption = WorkHorseDied("the job was interrupted in its worker (kill-horse)")
        self.log.info("Worker %s: interrupting job %s", self.name, job_id)
        threading.Thread(target=self._deliver_interruption, args=(job_id,), daemon=True).start()

    def _deliver_interruption(self, job_id: str) -> None:
        """Signals the main thread until its handler took the interruption: a signal that lands between a
        blocking call's last check and the call itself (`time.sleep` letting go of the GIL) is only handled
        once the call returns, so it is sent again."""
        main = threading.main_thread().ident or 0
        for _ in range(INTERRUPT_TRIES):
            if self._interruption is None or self._interruptible_job_id != job_id:
                return
            signal.pthread_kill(main, INTERRUPT_SIGNAL)
            time.sleep(INTERRUPT_RETRY_S)

    def handle_payload(self, message: dict[str, Any]) -> None:
        """RQ ignores kill-horse for a worker without a horse process; here the job is the horse."""
        if parse_payload(message).get("command") == "kill-horse" and self._interruptible_job_id is not None:
            self.log.info("Worker %s: received kill horse command", self.name)
            self.kill_horse()
            return
        super().handle_payload(message)  # type: ignore[no-untyped-call]

    def _finalize_failure(
        self,
        job: Job,
        queue: Queue,
        execution: Execution,
        exc_info: tuple[type[BaseException] | None, BaseException | None, TracebackType | None],
    ) -> None:
        """A job stopped on request ends as RQ's forking worker ends it (`Worker._handle_stopped_job`):
        the stopped callback, then `stopped` (never retried)."""
        if self._stopped_job_id != job.id:
            super()._finalize_failure(job, queue, execution, exc_info)
            return
        self.log.warning("Worker %s: job %s stopped on request", self.name, job.id)
        self.handle_execution_ended(job, queue, job.failure_callback_timeout)
        try:
            execute_stopped_callback(job, self.death_penalty_class)
        except Exception:
            self.log.exception("Worker %s: stopped callback for job %s raised", self.name, job.id)
        self.handle_job_failure(job, queue=queue, exc_string="Job stopped by user.", execution=execution)

    def _restore_process_state(self) -> None:
        """What a task may have changed for the next job: the signal mask (a task that blocked SIGALRM
        would leave every later job without its timeout) and the working directory."""
        if signal.pthread_sigmask(signal.SIG_BLOCK, []) != self._signal_mask:
            # An alarm left pending while blocked would kill the worker once unblocked: discard it first.
            previous = signal.signal(signal.SIGALRM, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, self._signal_mask)
            signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if os.getcwd() != self._directory:
            os.chdir(self._directory)

    def _recycle_if_bloated(self) -> None:
        if not self.max_memory_mb:
            return
        resident = resident_mb()
        if resident > self.max_memory_mb:
            self.log.warning(
                "Worker %s: %.0f MB resident after a job, over WORKER_MAX_MEMORY_MB=%d: exiting (a fresh one follows)",
                self.name,
                resident,
                self.max_memory_mb,
            )
            self._stop_requested = True  # RQ's loop stops before taking another job
