"""Flipping USE_RQ_QUEUE with jobs in flight, and an API process dying with in-process jobs."""

from __future__ import annotations

import signal
from collections.abc import Callable

from core.models import DispatchMode
from tests.faults.cluster import Cluster, Tally, assert_nothing_lost
from tests.support.processes import wait_for


def test_flip_from_rq_to_background_with_jobs_in_flight(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    deployment = cluster()
    api = deployment.start_api(use_rq_queue=True)
    workers = deployment.start_workers()
    deployment.fake.script.hold.clear()
    attempted, ids = deployment.upload(6)  # one runs on the worker, five wait on the RQ queue
    deployment.wait_started()

    api.stop()
    deployment.start_api(use_rq_queue=False)  # the rollback
    workers.send(signal.SIGTERM)  # warm shutdown: its current job finishes first
    deployment.fake.script.hold.set()
    wait_for(lambda: not workers.alive, 30, "the worker to finish its job and exit")
    deployment.drain(ids, timeout_s=90)

    tally = record(deployment.tally("flag flip rq -> background, jobs in flight", attempted, ids))
    assert_nothing_lost(tally)
    modes = [row.mode for row in deployment.rows(ids).values() if row]
    assert modes.count(DispatchMode.BACKGROUND) >= 4  # taken back from RQ and run in the API


def test_flip_from_background_to_rq_with_jobs_in_flight(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    deployment = cluster(background_concurrency=1)
    api = deployment.start_api(use_rq_queue=False)
    deployment.fake.script.hold.clear()
    attempted, ids = deployment.upload(5)  # one runs inside the API, four wait there
    deployment.wait_started()

    # Restart with the other flag: the in-process jobs die with the old process. (A SIGTERM would come to
    # the same: this API, uvicorn's CLI, waits for its requests' jobs, and one is held in the analysis server.)
    api.kill_group(signal.SIGKILL)
    deployment.fake.script.hold.set()
    deployment.start_api(use_rq_queue=True)
    deployment.start_workers()
    deployment.start_scheduler()
    deployment.drain(ids, timeout_s=90)

    tally = record(deployment.tally("flag flip background -> rq, jobs in flight", attempted, ids))
    assert_nothing_lost(tally)
    assert all(row.mode is DispatchMode.RQ for row in deployment.rows(ids).values() if row)


def test_api_killed_with_in_process_jobs_in_flight(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    deployment = cluster(background_concurrency=2, use_rq_queue=False)
    api = deployment.start_api()
    deployment.fake.script.hold.clear()
    attempted, ids = deployment.upload(6)
    deployment.wait_started(count=2)

    api.kill_group(signal.SIGKILL)
    deployment.fake.script.hold.set()
    deployment.start_api()  # same flag: its reconciler re-runs what the dead process held
    deployment.drain(ids, timeout_s=90)

    tally = record(deployment.tally("API SIGKILL with in-process jobs", attempted, ids))
    assert_nothing_lost(tally)
