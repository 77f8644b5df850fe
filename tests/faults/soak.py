"""A soak with faults, counted in Jepsen's terms: many uploads, faults injected while they run.

    .venv/bin/python -m tests.faults.soak [--jobs 300] [--faults 13] [--mode rq|background|both] [--seed 1]

RQ mode: uploads stream in from two clients while, at even intervals, a fault is injected in turn:
a work-horse SIGKILL, a whole worker pool SIGKILL (restarted at once, as a supervisor would), a Redis
SIGKILL and restart. In-process mode: the API is stopped (SIGTERM) and restarted, then killed
(SIGKILL) and restarted, mid-stream. Then everything drains, and the tally says how many uploads were
attempted, acknowledged, finished, failed, lost (acknowledged, never ended) and how many effects were
duplicated (a callback delivered twice, a final result written twice), and how many retries were
recorded (`audiokit_jobs_retried_total`). Exits 1 when anything was lost or duplicated. Bounded: every
wait has a deadline. It starts its own Redis, fake analysis server, API and workers, in a temporary
directory; nothing else is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from sqlalchemy import func, select

from core.metrics import JobEvent, RedisJobMetrics
from core.models import TERMINAL_STATUSES, Job
from core.settings import QUEUES_BY_PRIORITY
from devserver.redis import RedisServer
from tests.faults.cluster import Cluster, Tally
from tests.support.audio import wav_bytes
from tests.support.fake_services import FakeServices

DRAIN_S = 600


@dataclass
class Traffic:
    """Uploads sent by a few client threads until told to stop; the acknowledged ids."""

    attempted: int = 0
    acknowledged: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, cluster: Cluster, count: int, stop: threading.Event) -> None:
        """Uploads until `count` were acknowledged (an upload refused while the API restarts is attempted,
        not acknowledged, and the client tries another)."""
        payload = wav_bytes(0.3)
        mine = 0
        deadline = time.monotonic() + 900
        with httpx.Client(timeout=30) as client:
            while mine < count and not stop.is_set() and time.monotonic() < deadline:
                assert cluster.api is not None
                with self.lock:
                    self.attempted += 1
                try:
                    answer = client.post(
                        f"{cluster.api.url}/audio",
                        files={"file": ("soak.wav", payload)},
                        data={"callback_url": cluster.fake.callback_url},
                    )
                except httpx.HTTPError:
                    time.sleep(0.2)  # the API is restarting: this upload was not acknowledged
                    continue
                if answer.status_code == 202:
                    mine += 1
                    with self.lock:
                        self.acknowledged.append(answer.json()["id"])


def ended(cluster: Cluster) -> int:
    with cluster.lifecycle.database.session() as session:
        return int(session.scalar(select(func.count()).select_from(Job).where(Job.status.in_(TERMINAL_STATUSES))) or 0)


def retried(cluster: Cluster) -> int:
    client = redis.Redis.from_url(cluster.redis.url)
    try:
        events = RedisJobMetrics(client).read(QUEUES_BY_PRIORITY).events
        return sum(events.get(JobEvent.RETRIED, {}).values())
    finally:
        client.close()


def inject_rq(cluster: Cluster, kind: int, workers: list[object]) -> str:
    pool = workers[-1]
    if kind == 0:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = cluster.fake.runner_pids()  # runs inside the analysis server right now
            if pids:
                os.kill(next(iter(pids.values())), signal.SIGKILL)
                return "work-horse SIGKILL"
            time.sleep(0.01)
        return "work-horse SIGKILL (none running: skipped)"
    if kind == 1:
        pool.kill_group()  # type: ignore[attr-defined]
        for pid in cluster.fake.runner_pids().values():  # work-horses live in their own groups
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        workers.append(cluster.start_workers())
        return "worker pool SIGKILL + restart"
    cluster.redis.stop(signal.SIGKILL)
    time.sleep(1.0)  # the outage itself
    cluster.redis.start()
    return "Redis SIGKILL + restart"


def inject_background(cluster: Cluster, kind: int) -> str:
    assert cluster.api is not None
    if kind % 2 == 0:
        cluster.api.stop(timeout_s=60)
    else:
        cluster.api.kill_group()
    cluster.start_api(as_deployed=True)
    return "API SIGTERM + restart" if kind % 2 == 0 else "API SIGKILL + restart"


def soak(mode: str, jobs: int, faults: int, seed: int, root: Path) -> tuple[Tally, int, list[str]]:
    random.seed(seed)
    redis_server = RedisServer(root / "redis")
    redis_server.start()
    fake = FakeServices().start()
    fake.script.delay_s = 0.1
    cluster = Cluster(
        root,
        redis_server,
        fake,
        use_rq_queue=mode == "rq",
        worker_count=2,
        background_concurrency=2,
        rq_retry_intervals="1",
    )
    injected: list[str] = []
    try:
        cluster.start_api(as_deployed=True)
        workers: list[object] = []
        if mode == "rq":
            workers.append(cluster.start_workers())
            cluster.start_scheduler()
        traffic = Traffic()
        stop = threading.Event()
        clients = [
            threading.Thread(target=traffic.send, args=(cluster, jobs // 2 + jobs % 2 * (index == 0), stop))
            for index in range(2)
        ]
        for client in clients:
            client.start()
        for number in range(faults):
            # Spread the faults over the work: wait until the next share of the jobs has ended.
            target = (number + 1) * jobs // (faults + 1)
            deadline = time.monotonic() + 120
            while ended(cluster) < target and time.monotonic() < deadline:
                time.sleep(0.1)
            fault = inject_rq(cluster, number % 3, workers) if mode == "rq" else inject_background(cluster, number)
            injected.append(fault)
            print(f"  fault {number + 1}/{faults} after {ended(cluster)} ended: {fault}", flush=True)
        for client in clients:
            client.join(timeout=600)
        stop.set()
        cluster.drain(traffic.acknowledged, timeout_s=DRAIN_S)
        tally = cluster.tally(f"soak {mode}: {jobs} uploads, {faults} faults", traffic.attempted, traffic.acknowledged)
        return tally, retried(cluster), injected
    finally:
        cluster.stop_all()
        fake.stop()
        redis_server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300, help="uploads per mode")
    parser.add_argument("--faults", type=int, default=13, help="faults injected per mode")
    parser.add_argument("--mode", choices=["rq", "background", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    modes = ["rq", "background"] if args.mode == "both" else [args.mode]
    failed = False
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix=f"soak-{mode}-") as directory:
            print(f"soak, {mode} mode: {args.jobs} uploads, {args.faults} faults", flush=True)
            started = time.monotonic()
            tally, retries, injected = soak(mode, args.jobs, args.faults, args.seed, Path(directory))
            print(tally.line())
            print(f"  retries recorded: {retries}; faults: {', '.join(sorted(set(injected)))}")
            print(f"  took {time.monotonic() - started:.0f}s", flush=True)
            failed |= tally.lost > 0 or tally.duplicate_effects > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
