"""The forking worker's side of each fork: a work-horse forked ahead of its job, and frozen for its collector.

RQ forks a work-horse once it has a job: the job then waits for the fork, for the work-horse's first Redis and
database connections, and for the copy of every memory page the work-horse writes to first (its memory is its
worker's, shared copy-on-write). Here a worker that has forked once keeps one spare work-horse forked ahead,
while it waits for work: the spare connects, runs what a job runs first and last (on no row) and a short
analysis, then waits on a pipe. A job is handed to it (its id, its queue, RQ's execution id), it reads the job
from Redis as RQ's `SpawnWorker` does and runs it exactly as a freshly forked work-horse would; the worker
monitors, times out, stops and reaps it as any work-horse. Each job still runs in a process of its own that
ends with it. A spare that died while waiting is replaced by a plain fork; a spare exits when its worker ends
(the pipe closes) or dies (it is re-parented). `WORKER_SPARE_WORK_HORSE=false` turns this off.

Whatever forks, the objects the child inherits are frozen for its garbage collector
(`gc.freeze()`): its collections never scan, so never write to, the shared pages. The worker
unfreezes them right after the fork, so its own collections (and memory) are as before.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rq import Worker
from rq.executions import Execution

from core.settings import get_settings
from jobs.runtime import get_runtime, share_worker_connection
from tasks.analyzers.scratch import share_with_work_horses, shared_arena
from workers.preload import analyze_tone

log = logging.getLogger(__name__)

_Base: Any = Worker if TYPE_CHECKING else object

PARENT_CHECK_S = 1.0  # how often a waiting spare checks that its worker is still alive
WARM_UP_JOB_ID = "00000000-spare-work-horse-no-such-job"


@dataclass(frozen=True)
class _Spare:
    pid: int
    pipe: int  # the worker's end: a job's order is written here


def _fork_frozen() -> int:
    """`os.fork()`, the child inheriting every object frozen for its collector (the parent's unfrozen again)."""
    gc.freeze()
    try:
        pid = os.fork()
    except BaseException:
        gc.unfreeze()
        raise
    if pid != 0:
        gc.unfreeze()
    return pid


class SpareWorkHorse(_Base):  # type: ignore[misc]
    """Mixin for RQ's forking `Worker`: a spare work-horse forked ahead of each job after the first."""

    _spare: _Spare | None = None
    _has_forked = False  # only a worker that forks work-horses (not a SimpleWorker's execution) keeps a spare

    # --- the worker ------------------------------------------------------------------

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        share_worker_connection(self.connection)  # once, before any fork: a work-horse connects to Redis once
        super().bootstrap(*args, **kwargs)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        if self._has_forked and self._spare is None and get_settings().worker_spare_work_horse:
            self._spare = self._fork_spare()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def fork_work_horse(self, job: Any, queue: Any) -> None:
        if not self._has_forked:  # before the first fork: every work-horse of this worker shares these pages
            share_with_work_horses(get_settings().worker_shared_scratch_mb * 2**20)
        self._has_forked = True
        spare, self._spare = self._spare, None
        if spare is not None and self._alive(spare) and self._hand_over(spare, job, queue):
            return
        gc.freeze()
        try:
            super().fork_work_horse(job, queue)
        finally:
            gc.unfreeze()  # in the worker only: a work-horse never returns from `fork_work_horse`

    def teardown(self) -> None:
        self._discard_spare()
        super().teardown()

    def _fork_spare(self) -> _Spare | None:
        read_end, write_end = os.pipe()
        try:
            pid = _fork_frozen()
        except OSError as exc:  # e.g. out of processes: jobs are forked when they come, as RQ does
            log.warning("Worker %s: no spare work-horse: %s", self.name, exc)
            os.close(read_end)
            os.close(write_end)
            return None
        if pid == 0:  # pragma: no cover (the spare; measured by the tests through the jobs it runs)
            try:
                os.close(write_end)
                self._serve_as_spare(read_end, os.getppid())
            finally:
                os._exit(1)
        os.close(read_end)
        return _Spare(pid, write_end)

    def _hand_over(self, spare: _Spare, job: Any, queue: Any) -> bool:
        """Gives the job to the spare; False when the spare is gone (the caller forks as usual)."""
        execution = self.execution
        order = {
            "job": job.id,
            "queue": queue.name,
            # RQ's execution record as the worker just wrote it (saves the work-horse reading it back)
            "execution": [execution.id, execution.created_at.timestamp(), execution.last_heartbeat.timestamp()],
        }
        message = json.dumps(order).encode() + b"\n"
        os.environ["RQ_WORKER_ID"] = self.name
        os.environ["RQ_JOB_ID"] = job.id
        try:
            os.write(spare.pipe, message)  # shorter than PIPE_BUF: written whole or not at all
        except OSError:  # it died while waiting (EPIPE)
            self._reap(spare)
            return False
        finally:
            os.close(spare.pipe)
        self._horse_pid = spare.pid
        self.procline(f"Handed job {job.id} to spare work-horse {spare.pid} at {time.time()}")
        return True

    def _discard_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is None:
            return
        os.close(spare.pipe)
        with contextlib.suppress(ProcessLookupError):
            os.kill(spare.pid, signal.SIGKILL)  # it holds no job: nothing to finish
        self._reap(spare)

    def _alive(self, spare: _Spare) -> bool:
        """False for a spare that has died (reaped here); one dying this very moment is caught by the write."""
        try:
            pid, _ = os.waitpid(spare.pid, os.WNOHANG)
        except ChildProcessError:
            pid = spare.pid
        if pid == 0:
            return True
        os.close(spare.pipe)
        return False

    def _reap(self, spare: _Spare) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(spare.pid, 0)

    # --- the spare -------------------------------------------------------------------

    def _serve_as_spare(self, pipe: int, worker_pid: int) -> None:
        """In the spare: gets ready, waits for a job's order, runs the job as a work-horse (never returns)."""
        os.setpgrp()  # as RQ's work-horse: the worker kills its whole group
        self.setup_work_horse_signals()
        self._warm_up(pipe)
        while not select.select([pipe], [], [], PARENT_CHECK_S)[0]:
            if os.getppid() != worker_pid:  # the worker died
                os._exit(0)
        with os.fdopen(pipe, "rb") as orders:
            line = orders.readline()
        if not line:  # the worker closed the pipe: it is stopping
            os._exit(0)
        order = json.loads(line)
        job = self.job_class.fetch(order["job"], connection=self.connection, serializer=self.serializer)
        queue = next((queue for queue in self.queues if queue.name == order["queue"]), None) or self.queue_class(
            order["queue"], connection=self.connection, job_class=self.job_class, serializer=self.serializer
        )
        execution_id, created_at, last_heartbeat = order["execution"]
        execution = Execution(execution_id, job.id, connection=self.connection, worker_name=self.name)
        execution.created_at = datetime.fromtimestamp(created_at, tz=UTC)
        execution.last_heartbeat = datetime.fromtimestamp(last_heartbeat, tz=UTC)
        execution._job = job
        self.execution = execution
        os.environ["RQ_WORKER_ID"] = self.name
        os.environ["RQ_JOB_ID"] = job.id
        self.main_work_horse(job, queue)

    def _warm_up(self, pipe: int) -> None:
        """Opens the connections a job uses, then, while no job's order has come (in a burst it comes at once,
        and work on no row would only delay it), runs the job's first and last writes once on an id that
        matches no row (the first execution of a statement in a fresh process costs several ms: its objects'
        pages are copied, its connection's first write set up) and maps the pages of the worker's shared
        working arrays that earlier jobs used, in one call rather than a page fault each. A failure is the
        job's to meet. On SQLite each of the two writes takes the write lock for an empty transaction. Last, still
        only while no order has come, it analyzes a 0.1 s tone: the pages a short analysis writes (the
        interpreter's objects, numpy's and libsndfile's state) are copied now rather than during the job's."""

        def ordered() -> bool:
            return bool(select.select([pipe], [], [], 0)[0])

        try:
            runtime = get_runtime()
            for pool in {self.connection.connection_pool, runtime.redis.connection_pool}:
                pool.release(pool.get_connection())  # connected, no command sent
            if ordered():
                return
            runtime.lifecycle.get(WARM_UP_JOB_ID)
            runtime.lifecycle.begin_attempt(WARM_UP_JOB_ID)
            # The final write as a job whose progress reports were held back until the end makes it.
            runtime.lifecycle.finish(WARM_UP_JOB_ID, {}, lines=["warm-up"], unless_canceled=True)
        except Exception as exc:
            log.debug("spare work-horse not warmed up: %s", exc)
        arena = shared_arena()
        if arena is not None and not ordered():
            arena.prefault()
        if not ordered():
            try:
                analyze_tone()
            except Exception as exc:
                log.debug("spare work-horse's analysis not warmed up: %s", exc)
