"""Runs in its own process, configured by the environment like a worker: drains bursts of no-op jobs
with raw RQ's workers and the kit's, interleaved, and times the phases of analysis jobs in the kit's
forking worker (`bench.workers` starts it by path and reads the file it writes).

Self-contained (it imports nothing from `bench`): run by path with another checkout first on
`PYTHONPATH`, it measures that checkout's code (the "before" numbers).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from redis.client import PubSub
from rq import Queue, SimpleWorker, Worker
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.worker.base import BaseWorker

import jobs.context
import jobs.execute
import jobs.runtime
from bench.stats import FAULTS_SUFFIX
from core.db import migrate
from core.lifecycle import Lifecycle
from core.models import Job
from core.notify import CHANNEL_PREFIX
from core.settings import get_settings
from jobs import task
from jobs.registry import import_task_modules
from jobs.runtime import get_runtime
from redis_client import make_redis
from tests.support.analyses import enqueue_upload
from tests.support.analyses import submitter as make_submitter
from workers.worker import KitWorker

try:  # the code as it was before workers preloaded anything (bench of an older checkout)
    from workers.preload import preload
except ImportError:  # pragma: no cover

    def preload() -> None:
        return None


RAW_QUEUE = "bench_raw"


def noop_function() -> None:
    """Raw RQ's job (pickled by reference, as `Queue.enqueue(noop_function)` does)."""


# Run by path this module is `__main__`, whose functions RQ refuses: the raw job names it by an alias.
PROBE_MODULE = "audiokit_worker_probe"
sys.modules.setdefault(PROBE_MODULE, sys.modules[__name__])
noop_function.__module__ = PROBE_MODULE


@task(name="bench.noop", queue="audio_analysis")
def noop_task() -> None:
    """The kit's job: nothing, so what is measured is the worker and the job layer."""


KIT_QUEUES = ["audio_analysis"]
SPAN_FILE_ENV = "BENCH_SPAN_FILE"
WAIT_TIMEOUT_S = 60.0
POLL_S = 0.002
NOTIFICATION_WAIT_S = 0.05  # a lost notification costs at most this (the row is read again)
# Each job of the breakdown comes after the workers were idle this long: the latency of a job that finds its
# worker waiting (not of one that queues behind another's end).
IDLE_GAP_S = 0.25
SHORT_FILE_LABEL = "0.1 s WAV, kit Worker"


try:  # the kit's no-fork worker (`start_worker.sh --no-fork`)
    from workers.simple import KitSimpleWorker
except ImportError:  # pragma: no cover (an older checkout: its worker with RQ's SimpleWorker execution)

    class KitSimpleWorker(KitWorker):  # type: ignore[no-redef]
        execute_job = SimpleWorker.execute_job
        get_heartbeat_ttl = SimpleWorker.get_heartbeat_ttl


def _commands(connection: redis.Redis) -> int:
    """Commands Redis has run so far, not counting the INFO calls that read the count."""
    stats = connection.info("commandstats")
    return sum(int(value["calls"]) for name, value in stats.items() if name != "cmdstat_info")


def _drain(connection: redis.Redis, kind: str, jobs: int) -> tuple[float, float]:
    """Enqueues `jobs` no-op jobs for `kind`, drains them with a burst worker; (jobs/s, Redis commands per job)."""
    if kind.startswith("raw"):
        queue = Queue(RAW_QUEUE, connection=connection)
        for _ in range(jobs):
            queue.enqueue(noop_function)
        raw_class: type[BaseWorker] = SimpleWorker if kind == "raw-simple" else Worker
        worker = _timed_class(raw_class)([queue], connection=connection)
    else:
        kit = make_submitter(get_runtime())
        for _ in range(jobs):
            kit.submit(kit.build(noop_task))
        worker_class = KitSimpleWorker if kind == "kit-simple" else KitWorker
        worker = _timed_class(worker_class)(KIT_QUEUES, connection=connection)
    before = _commands(connection)
    started = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    elapsed = worker.drained_at - started  # type: ignore[attr-defined]
    return jobs / elapsed, (_commands(connection) - before) / jobs


def _timed_class(worker_class: type[BaseWorker]) -> type[BaseWorker]:
    """`worker_class`, noting when its queues ran dry: RQ's teardown after that (joining its pub/sub
    thread takes up to a second) is the same for every worker and not part of a job's cost."""

    def teardown(self: BaseWorker) -> None:
        self.drained_at = time.perf_counter()  # type: ignore[attr-defined]
        worker_class.teardown(self)  # type: ignore[no-untyped-call]

    return type(f"Timed{worker_class.__name__}", (worker_class,), {"teardown": teardown})


def _timed(record: dict[str, float], name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func`, adding its duration (ms) to `record[name]`; `first`/`last` are the wall-clock start of the
    first call and end of the last one (`time.time()`: comparable with the other processes' and the rows')."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, wall = time.perf_counter(), time.time()
        try:
            return func(*args, **kwargs)
        finally:
            record[name] = record.get(name, 0.0) + (time.perf_counter() - started) * 1000
            record.setdefault("first", wall)
            record["last"] = time.time()

    return wrapper


_spans: dict[str, float] = {}  # durations (ms) of a job's phases, timed in the work-horse
_marks: dict[str, float] = {}  # wall-clock moments of a job (s since the epoch), in the worker and its work-horse


def _instrument() -> None:
    """Spans around the phases of `jobs.execute.run_job`, recorded in the work-horse."""
    setattr(jobs.execute, "get_runtime", _timed(_spans, "runtime", jobs.runtime.get_runtime))  # noqa: B010
    Lifecycle.begin_attempt = _timed(_spans, "begin", Lifecycle.begin_attempt)  # type: ignore[method-assign]
    jobs.execute.call_task = _timed(_spans, "task", jobs.execute.call_task)
    Lifecycle.report_progress = _timed(_spans, "progress", Lifecycle.report_progress)  # type: ignore[method-assign]
    jobs.context.mirror_to_rq = _timed(_spans, "progress", jobs.context.mirror_to_rq)
    final_write = "finish" if hasattr(Lifecycle, "finish") else "complete"  # older code: `complete` only
    setattr(Lifecycle, final_write, _timed(_spans, "complete", getattr(Lifecycle, final_write)))


def _epoch(moment: datetime) -> float:
    """Seconds since the epoch of a UTC timestamp (RQ's and older rows' are naive)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _write_span_line(line: dict[str, Any]) -> None:
    with open(os.environ[SPAN_FILE_ENV], "a") as spans:
        spans.write(json.dumps(line) + "\n")


class SpanWorker(KitWorker):
    """The kit's forking worker, noting when each job was dequeued, forked, run and reaped."""

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        if result is not None:
            _marks.clear()
            _marks["dequeued"] = time.time()
            _marks["enqueued"] = _epoch(result[0].enqueued_at)
        return result

    def perform_job(self, job: RQJob, queue: Queue, execution: Execution) -> bool:
        _marks["horse"] = time.time()  # in the work-horse, from here on
        _spans.clear()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        try:
            return super().perform_job(job, queue, execution)
        finally:
            _spans["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            _write_span_line({"job": job.id, "spans": _spans, "marks": _marks})

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        super().execute_job(job, queue)
        # The worker's own marks: a work-horse forked ahead of the job has none of them.
        _write_span_line({"job": job.id, "reaped": time.time(), "marks": _marks})


def _wait(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {WAIT_TIMEOUT_S} s")
        time.sleep(POLL_S)
    return value


def _seen_finished(pubsub: PubSub, lifecycle: Lifecycle, job_id: str) -> tuple[Job, float]:
    """Waits as an event stream does (a change notification, then a read of the row) until the row says
    finished; the row and when this client saw it (wall clock)."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while time.monotonic() < deadline:
        job = lifecycle.get(job_id)
        if job is not None and job.finished_at is not None:
            return job, time.time()
        pubsub.get_message(timeout=NOTIFICATION_WAIT_S)
    raise TimeoutError(f"job {job_id} not finished within {WAIT_TIMEOUT_S} s")


def _lines_of(span_file: Path, job_id: str) -> list[dict[str, Any]] | None:
    """The job's two lines (the work-horse's and its worker's), once both are written."""
    if not span_file.exists():
        return None
    lines = [json.loads(line) for line in span_file.read_text().splitlines()]
    mine = [line for line in lines if line["job"] == job_id]
    return mine if len(mine) >= 2 else None


def _serve(worker: BaseWorker) -> int:
    """Forks a process that runs `worker` until SIGTERM; its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the worker process)
        try:
            worker.work(logging_level="WARNING")
        finally:
            os._exit(0)
    return pid


def _timeline(row: Job, seen: float, lines: list[dict[str, Any]]) -> dict[str, float]:
    """One job's phases in ms, from its row, its spans and marks, and when the client saw it finished."""
    horse = next(line for line in lines if "spans" in line)
    worker = next(line for line in lines if "reaped" in line)
    spans, marks, reaped = horse["spans"], {**worker["marks"], "horse": horse["marks"]["horse"]}, worker["reaped"]
    committed = _epoch(row.created_at)
    return {
        "commit → on the queue": (marks["enqueued"] - committed) * 1000,
        "wake-up: on the queue → dequeued": (marks["dequeued"] - marks["enqueued"]) * 1000,
        "fork (or hand-over): dequeued → work-horse runs": (marks["horse"] - marks["dequeued"]) * 1000,
        "RQ bookkeeping before the job": (spans.get("first", marks["horse"]) - marks["horse"]) * 1000,
        "begin": spans.get("begin", 0.0),
        "task without progress": spans.get("task", 0.0) - spans.get("progress", 0.0),
        "progress reports": spans.get("progress", 0.0),
        "complete": spans.get("complete", 0.0),
        "after finished: RQ bookkeeping, exit, reaped": (reaped - spans.get("last", reaped)) * 1000,
        f"work-horse during the job{FAULTS_SUFFIX}": spans.get("faults", 0.0),
        "commit → finished (row clock)": (_epoch(row.finished_at) - committed) * 1000,  # type: ignore[arg-type]
        "commit → seen finished (client clock)": (seen - committed) * 1000,
    }


def _kit_job(pubsub: PubSub, lifecycle: Lifecycle, span_file: Path, job_id: str) -> dict[str, float]:
    """The timeline of the kit's job `job_id`, once a client saw it finished and its worker reaped it."""
    row, seen = _seen_finished(pubsub, lifecycle, job_id)
    return _timeline(row, seen, _wait(functools.partial(_lines_of, span_file, job_id), "spans"))


def _breakdown(connection: redis.Redis, audio: bytes, jobs: int) -> dict[str, list[float]]:
    """Runs jobs one at a time on running workers, interleaved: a no-op on raw RQ's forking `Worker`, a no-op
    task and an analysis of `audio` on the kit's; per measure, its values in ms (all clocks are the wall clock
    of this machine, shared by the processes)."""
    span_file = Path(os.environ[SPAN_FILE_ENV])
    span_file.unlink(missing_ok=True)
    runtime = get_runtime()
    kit = make_submitter(runtime)
    raw_queue = Queue(RAW_QUEUE, connection=connection)
    pubsub = runtime.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.psubscribe(f"{CHANNEL_PREFIX}*")
    pids = [
        _serve(Worker([raw_queue], connection=connection)),
        _serve(SpanWorker(KIT_QUEUES, connection=make_redis(runtime.settings, role="worker"))),
    ]
    measures: dict[str, list[float]] = {}
    try:
        for _ in range(jobs):
            time.sleep(IDLE_GAP_S)
            raw = raw_queue.enqueue(noop_function)
            raw.latest_result(timeout=int(WAIT_TIMEOUT_S))
            seen = time.time()
            raw.refresh()  # type: ignore[no-untyped-call]
            for name, value in (
                ("raw RQ Worker, no-op: enqueue → ended (RQ's clock)", _epoch(raw.ended_at) - _epoch(raw.enqueued_at)),  # type: ignore[arg-type]
                ("raw RQ Worker, no-op: enqueue → result seen (client clock)", seen - _epoch(raw.enqueued_at)),  # type: ignore[arg-type]
            ):
                measures.setdefault(name, []).append(value * 1000)
            time.sleep(IDLE_GAP_S)
            timeline = _kit_job(pubsub, runtime.lifecycle, span_file, kit.submit(kit.build(noop_task)).job.id)
            for name in ("commit → finished (row clock)", "commit → seen finished (client clock)"):
                measures.setdefault(f"kit Worker, no-op task: {name}", []).append(timeline[name])
            time.sleep(IDLE_GAP_S)
            timeline = _kit_job(pubsub, runtime.lifecycle, span_file, enqueue_upload(runtime, audio))
            for name, value in timeline.items():
                measures.setdefault(f"{SHORT_FILE_LABEL}: {name}", []).append(value)
    finally:
        pubsub.close()
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
    return measures


def main(argv: list[str]) -> int:
    result_path, rounds, jobs, breakdown_jobs, audio_path = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    settings = get_settings()
    migrate(settings.database_url)
    import_task_modules(settings.task_modules)
    preload()
    _instrument()
    connection = redis.Redis.from_url(settings.resolved_redis_url)
    kinds = ("raw-fork", "kit-fork", "raw-simple", "kit-simple")
    drains: dict[str, list[list[float]]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind in kinds:
            drains[kind].append(list(_drain(connection, kind, jobs)))
    phases = _breakdown(connection, Path(audio_path).read_bytes(), breakdown_jobs) if breakdown_jobs else {}
    Path(result_path).write_text(json.dumps({"drains": drains, "phases": phases}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
