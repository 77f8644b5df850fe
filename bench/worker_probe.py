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
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from rq import Queue, SimpleWorker, Worker
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.worker.base import BaseWorker

import jobs.context
import jobs.execute
import jobs.runtime
from core.db import migrate
from core.lifecycle import Lifecycle
from core.models import Job
from core.settings import get_settings
from jobs import task
from jobs.registry import import_task_modules
from jobs.runtime import get_runtime
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
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            record[name] = record.get(name, 0.0) + (time.perf_counter() - started) * 1000
            record.setdefault("first", started)
            record["last"] = time.perf_counter()

    return wrapper


_spans: dict[str, float] = {}


def _instrument() -> None:
    """Spans around the phases of `jobs.execute.run_job`, recorded in the work-horse."""
    setattr(jobs.execute, "get_runtime", _timed(_spans, "runtime", jobs.runtime.get_runtime))  # noqa: B010
    Lifecycle.begin_attempt = _timed(_spans, "begin", Lifecycle.begin_attempt)  # type: ignore[method-assign]
    jobs.execute.call_task = _timed(_spans, "task", jobs.execute.call_task)
    Lifecycle.report_progress = _timed(_spans, "progress", Lifecycle.report_progress)  # type: ignore[method-assign]
    jobs.context.mirror_to_rq = _timed(_spans, "progress", jobs.context.mirror_to_rq)
    final_write = "finish" if hasattr(Lifecycle, "finish") else "complete"  # older code: `complete` only
    setattr(Lifecycle, final_write, _timed(_spans, "complete", getattr(Lifecycle, final_write)))


class SpanWorker(KitWorker):
    """The kit's forking worker, timing each job from the parent (fork to reaped) and in the child."""

    def perform_job(self, job: RQJob, queue: Queue, execution: Execution) -> bool:
        _spans.clear()
        try:
            return super().perform_job(job, queue, execution)
        finally:
            _spans.pop("first", None)
            _spans["end"] = _spans.pop("last", 0.0)
            with open(os.environ[SPAN_FILE_ENV], "a") as spans:
                spans.write(json.dumps({"child": _spans}) + "\n")

    def execute_job(self, job: RQJob, queue: Queue) -> None:
        started = time.perf_counter()
        super().execute_job(job, queue)
        with open(os.environ[SPAN_FILE_ENV], "a") as spans:
            spans.write(json.dumps({"parent_ms": (time.perf_counter() - started) * 1000}) + "\n")


def _wait(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {WAIT_TIMEOUT_S} s")
        time.sleep(POLL_S)
    return value


def _finished(lifecycle: Lifecycle, job_id: str) -> Job | None:
    job = lifecycle.get(job_id)
    return job if job is not None and job.finished_at is not None else None


def _spans_of_one_job(span_file: Path) -> list[dict[str, Any]] | None:
    """Both lines of the job (the work-horse's and its parent's), once written."""
    if not span_file.exists():
        return None
    lines = [json.loads(line) for line in span_file.read_text().splitlines()]
    return lines if len(lines) >= 2 else None


def _breakdown(connection: redis.Redis, audio: bytes, jobs: int) -> list[dict[str, Any]]:
    """Runs `jobs` analyses of `audio`, one at a time, on a running kit worker (forking); per-job phases in ms."""
    span_file = Path(os.environ[SPAN_FILE_ENV])
    span_file.unlink(missing_ok=True)
    runtime = get_runtime()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the worker process)
        try:
            SpanWorker(KIT_QUEUES, connection=connection).work(logging_level="WARNING")
        finally:
            os._exit(0)
    phases: list[dict[str, Any]] = []
    try:
        for _ in range(jobs):
            job_id = enqueue_upload(runtime, audio)
            row = _wait(functools.partial(_finished, runtime.lifecycle, job_id), "finished job")
            lines = _wait(lambda: _spans_of_one_job(span_file), "spans")
            span_file.unlink()
            child = next(line["child"] for line in lines if "child" in line)
            parent_ms = next(line["parent_ms"] for line in lines if "parent_ms" in line)
            in_child = sum(child.get(name, 0.0) for name in ("runtime", "begin", "task", "complete"))
            phases.append(
                {
                    "fork": parent_ms - in_child,
                    "runtime": child.get("runtime", 0.0),
                    "begin": child.get("begin", 0.0),
                    "analysis": child.get("task", 0.0) - child.get("progress", 0.0),
                    "progress": child.get("progress", 0.0),
                    "complete": child.get("complete", 0.0),
                    "enqueue_to_finished": (row.finished_at - row.created_at).total_seconds() * 1000,
                }
            )
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    return phases


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
    phases = _breakdown(connection, Path(audio_path).read_bytes(), breakdown_jobs) if breakdown_jobs else []
    Path(result_path).write_text(json.dumps({"drains": drains, "phases": phases}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
