"""Worker entry point: `python -m workers.main` (what `start_worker.sh` runs).

Runs RQ's `WorkerPool` of N workers (also for N = 1: the pool respawns a
worker that dies), on the queues in priority order, with RQ's scheduler
(scheduled jobs and retry backoff), JSON jobs and the allow-list. SIGTERM (or
Ctrl-C) is a warm shutdown: current jobs finish, then the workers exit; a
second signal stops at once and the jobs are retried later. `WORKER_MODE` (or
`--no-fork`) picks the worker class: a fork per job, or jobs in the warm worker.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rq.serializers import JSONSerializer

import jobs.callbacks
import jobs.execute
import jobs.maintenance
import jobs.outcomes
from core.errors import ConfigurationError
from core.settings import Settings, parse_queue_names
from core.startup import EXIT_CONFIGURATION, configure_logging, settings_or_exit
from jobs.registry import import_task_modules
from redis_client import KitJob, KitQueue, check_redis_policy, make_redis
from workers.pool import KitWorkerPool
from workers.preload import preload
from workers.simple import KitSimpleWorker
from workers.wait import wait_for_redis
from workers.worker import KitWorker, KitWorkerBase

log = logging.getLogger("workers")

# Imported before the pool forks workers and each worker forks a work-horse per job (with the task
# modules, `TASK_MODULES`, and what `workers.preload` loads); otherwise every job pays ~240 ms importing
# numpy, soundfile and SQLAlchemy again (measured by bench/).
PRELOADED_JOB_MODULES = (jobs.callbacks, jobs.execute, jobs.maintenance, jobs.outcomes)


def parse_args(argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="start_worker.sh", description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=settings.worker_count, help="workers to run")
    parser.add_argument(
        "-q", "--queues", default=",".join(settings.worker_queues), help="queues, highest priority first"
    )
    parser.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    parser.add_argument(
        "--no-fork",
        dest="mode",
        action="store_const",
        const="simple",
        default=settings.worker_mode,
        help="run jobs in the warm worker process, without a fork per job (WORKER_MODE=simple)",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    settings = settings_or_exit("start_worker")
    args = parse_args(argv, settings)
    try:
        queues = parse_queue_names(args.queues)
    except ValueError as exc:
        print(f"start_worker: --queues: {exc}", file=sys.stderr)
        return EXIT_CONFIGURATION
    configure_logging(settings)
    try:
        import_task_modules(settings.task_modules)
    except ImportError as exc:
        print(f"start_worker: TASK_MODULES: {exc}", file=sys.stderr)
        return EXIT_CONFIGURATION
    connection = make_redis(settings, role="worker")
    wait_for_redis(connection)
    try:
        for warning in check_redis_policy(connection):
            log.warning(warning)
    except ConfigurationError as exc:
        print(f"start_worker: {exc}", file=sys.stderr)
        return EXIT_CONFIGURATION

    preload()
    worker_class: type[KitWorkerBase] = KitSimpleWorker if args.mode == "simple" else KitWorker
    log.info("worker mode: %s (%s)", args.mode, worker_class.__name__)
    pool = KitWorkerPool(
        list(queues),
        connection=connection,
        num_workers=args.count,
        worker_class=worker_class,
        serializer=JSONSerializer,
        job_class=KitJob,
        queue_class=KitQueue,
    )
    pool.start(burst=args.burst, logging_level=settings.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
