"""Health check of a worker or scheduler container: `python -m workers.healthcheck worker|scheduler`.

A container's health check runs inside it, so "this host" is the container:

- `worker`: at least one RQ worker of this host is registered in Redis with a
  heartbeat younger than `WORKER_TTL_S` (a worker stuck or cut off from Redis
  stops beating);
- `scheduler`: an rq-scheduler instance is registered and has not recorded its
  death (its registration expires a few seconds after it stops polling).

Exit status 0 when healthy, 1 with the reason on stderr otherwise. It reads the
registries only: nothing heavy is imported, so it is cheap to run every few seconds.
"""

from __future__ import annotations

import argparse
import socket
import sys
from datetime import UTC, datetime, timedelta

import redis
from rq import Worker

from core.settings import Settings
from core.startup import settings_or_exit
from redis_client import make_redis

SCHEDULER_INSTANCES = "rq:scheduler_instance:*"  # rq-scheduler's registrations (rq_scheduler.Scheduler.key)


def worker_problem(connection: redis.Redis, settings: Settings, hostname: str | None = None) -> str | None:
    """Why no worker of `hostname` (default: this host) is alive, or None when one is."""
    hostname = hostname or socket.gethostname()
    cutoff = datetime.now(UTC) - timedelta(seconds=settings.worker_ttl_s)
    mine = [worker for worker in Worker.all(connection=connection) if worker.hostname == hostname]
    if not mine:
        return f"no RQ worker of host {hostname} is registered"
    if not any(worker.last_heartbeat is not None and worker.last_heartbeat >= cutoff for worker in mine):
        return f"no RQ worker of host {hostname} sent a heartbeat in the last {settings.worker_ttl_s}s"
    return None


def scheduler_problem(connection: redis.Redis) -> str | None:
    """Why no rq-scheduler is alive, or None when one is."""
    for key in connection.scan_iter(match=SCHEDULER_INSTANCES, count=100):
        if not connection.hexists(key, "death"):
            return None
    return "rq-scheduler is not running (python -m workers.scheduler)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["worker", "scheduler"])
    args = parser.parse_args(argv)
    settings = settings_or_exit("healthcheck")
    try:
        with make_redis(settings) as connection:
            problem = worker_problem(connection, settings) if args.role == "worker" else scheduler_problem(connection)
    except redis.exceptions.RedisError as exc:
        problem = f"Redis: {exc}"
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
