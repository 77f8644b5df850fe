"""Jobs while workers are killed at random, three times: every job ends once.

40 jobs in the suite (`CHAOS_JOBS` for more); `python -m tests.faults.soak` runs hundreds with more faults.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import pytest

from tests.faults.cluster import BOTH_WORKER_MODES, Cluster, Tally, assert_nothing_lost, kill_runner
from tests.support.processes import wait_for

N_JOBS = int(os.environ.get("CHAOS_JOBS", "40"))
KILLS = 3
SEED = int(os.environ.get("CHAOS_SEED", "20261122"))
WORKER_MODES = BOTH_WORKER_MODES

# The drain alone may take 240 s on a loaded machine; the suite's 120 s per test would cut it short.
pytestmark = pytest.mark.timeout(360)


@pytest.mark.pairwise("worker_mode", offset=1)  # forking workers on the second database, no-fork on the first
def test_jobs_with_workers_killed_at_random_three_times_all_end_once(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally]
) -> None:
    chance = random.Random(SEED)
    deployment = cluster(worker_count=2, rq_retry_intervals="0")
    deployment.start_api()
    workers = deployment.start_workers()
    deployment.start_scheduler()
    deployment.fake.script.delay_s = 0.05
    # Analyses stop at the analysis server between faults: every kill finds a run in flight, however
    # fast or slow the machine drains the rest.
    deployment.fake.script.hold.clear()
    attempted, ids = deployment.upload(N_JOBS, seconds=0.2)

    kills = []
    for _ in range(KILLS):
        runners = deployment.wait_started()
        _victim, horse = chance.choice(sorted(runners.items()))
        if chance.random() < 0.5:
            kill_runner(horse)
            kills.append("work-horse")
        else:
            workers.kill_group()
            kill_runner(horse)
            workers = deployment.start_workers()
            kills.append("whole pool")
        deployment.fake.script.hold.set()
        time.sleep(chance.uniform(0.5, 2.0))  # a random moment of progress before the next fault, not a wait
        deployment.fake.script.hold.clear()
    deployment.fake.script.hold.set()
    deployment.drain(ids, timeout_s=240)

    tally = record(deployment.tally(f"{N_JOBS} jobs, random kills ({', '.join(kills)}; seed {SEED})", attempted, ids))
    assert_nothing_lost(tally)
    wait_for(lambda: workers.alive, 1, "the last workers to be up")
