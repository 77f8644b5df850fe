"""Stopping an API that runs jobs in-process (`USE_RQ_QUEUE=false`), deliberately.

SIGTERM with jobs running and waiting: the server does not sit on requests waiting for their jobs,
nothing is cancelled with a traceback, the running job reaches a checkpoint (or its end), every
unfinished job is handed to the next process in one logged step, and the next API process takes them
up in its first reconciler pass, well inside the reconciler's grace period (60 s here).
"""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Callable

import httpx

from core.models import JobStatus
from devserver.ports import free_port
from tests.faults.cluster import Cluster, Tally, assert_nothing_lost
from tests.support.audio import wav_bytes
from tests.support.processes import ManagedProcess, settings_env, wait_for

N_JOBS = 8


def start_api(deployment: Cluster, port: int) -> ManagedProcess:
    """`python -m app`, the API as `make run` and the deployment files start it."""
    env = settings_env(deployment.settings) | {"PORT": str(port), "HOST": "127.0.0.1"}
    process = ManagedProcess([sys.executable, "-m", "app"], env, deployment.tmp_path / f"api-{port}.log")
    deployment.processes.append(process)

    def ready() -> bool:
        if not process.alive:
            raise AssertionError(process.output()[-3000:])
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 60, "the API")
    return process


def test_an_in_process_api_stopped_under_load_hands_its_jobs_to_the_next_one(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    deployment = cluster(use_rq_queue=False, background_concurrency=1, reconcile_grace_s=60, reconcile_interval_s=30)
    first_port = free_port()
    first = start_api(deployment, first_port)
    deployment.fake.script.hold.clear()
    ids = []
    with httpx.Client(base_url=f"http://127.0.0.1:{first_port}", timeout=30) as client:
        for index in range(N_JOBS):
            answer = client.post(
                "/audio",
                files={"file": (f"{index}.wav", wav_bytes(0.5))},
                data={"callback_url": deployment.fake.callback_url},
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
    deployment.wait_started(1)  # one job inside the analysis server, seven in line

    # Each job takes 2.5 s: the line outlasts the server's 10 s graceful timeout, which used to cancel the
    # requests still waiting for their jobs (a traceback each).
    deployment.fake.script.delay_s = 2.5
    first.send(signal.SIGTERM)
    deployment.fake.script.hold.set()  # the running job may go on to its next checkpoint
    wait_for(lambda: not first.alive, 60, "the API to stop")
    deployment.fake.script.delay_s = 0.0
    log = first.output()
    for noise in ("Traceback", "Exception in ASGI application", "CancelledError", "Cancel "):
        assert noise not in log, log[-4000:]
    stopped = [line for line in log.splitlines() if "in-process runner stopped" in line]
    assert len(stopped) == 1, log[-4000:]
    counts = re.search(r"(\d+) job\(s\) unfinished, (\d+) running .* (\d+) handed to the next process", stopped[0])
    assert counts is not None, stopped
    unfinished, running, handed = (int(group) for group in counts.groups())
    assert running <= 1, stopped

    rows = deployment.rows(ids)
    left = [job_id for job_id, row in rows.items() if row is not None and not row.status.is_terminal]
    assert len(left) >= N_JOBS - 1, {job_id: row and row.status for job_id, row in rows.items()}
    for job_id in left:
        row = rows[job_id]
        assert row is not None
        assert row.status is JobStatus.PENDING
        assert row.logs[-1]["message"] == "left by a stopping API process; the next one takes it up"
    assert handed == len(left) == unfinished, (stopped, left)

    restarted_at = time.monotonic()
    start_api(deployment, free_port())

    def all_ended() -> bool:
        return all(row is not None and row.status.is_terminal for row in deployment.rows(ids).values())

    # The reconciler's grace is 60 s: only a hand-over makes the next process take them up sooner.
    wait_for(all_ended, 45, "the next API process to run the jobs left to it")
    print(f"jobs handed over finished {time.monotonic() - restarted_at:.1f}s after the next API started")
    deployment.drain(ids)
    tally = record(deployment.tally("in-process API SIGTERM with jobs running and waiting", N_JOBS, ids))
    assert_nothing_lost(tally)
    for job_id in left:
        row = deployment.rows([job_id])[job_id]
        assert row is not None
        assert any(line["message"] == "recovered by the reconciler (was pending)" for line in row.logs), row.logs
