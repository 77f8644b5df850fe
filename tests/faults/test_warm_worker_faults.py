"""Faults of the no-fork mode (`start_worker.sh --no-fork`): a job stuck where RQ's alarm cannot reach it,
a task that ends its process, and workers recycled after `WORKER_MAX_JOBS` jobs. Nothing is lost.

Counted like the other scenarios (Jepsen's terms); these jobs ask for no callback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.models import Job, JobStatus
from jobs.runtime import build_runtime
from tests.faults.cluster import SIMPLE, TERMINAL, Cluster, Tally, assert_nothing_lost
from tests.support import warm_tasks
from tests.support.analyses import submitter
from tests.support.processes import wait_for

RECYCLE_AFTER = 3
WORKER_MODES = (SIMPLE,)  # what these scenarios check exists in simple mode only


def _tally(scenario: str, rows: dict[str, Job | None]) -> Tally:
    status = [row.status.value if row else "missing" for row in rows.values()]
    finals = [
        sum(1 for line in row.logs if line["message"].startswith("finished")) if row else 0 for row in rows.values()
    ]
    return Tally(
        scenario=scenario,
        attempted=len(rows),
        acknowledged=len(rows),
        finished=status.count("finished"),
        failed=status.count("failed"),
        lost=sum(1 for value in status if value not in TERMINAL),
        duplicate_effects=sum(max(0, writes - 1) for writes in finals),
        undelivered_callbacks=0,
    )


def test_stuck_and_crashing_jobs_and_recycled_warm_workers_lose_nothing(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally], tmp_path: Path
) -> None:
    deployment = cluster(
        task_modules=warm_tasks.WARM_TASK_MODULES,
        worker_watchdog_grace_s=1,
        worker_max_jobs=RECYCLE_AFTER,
        rq_retry_intervals="0",
    )
    runtime = build_runtime(deployment.settings)
    kit = submitter(runtime)

    def submit(func: Callable[..., object], *args: object) -> str:
        return kit.submit(kit.build(func, list(args))).job.id

    # One worker, first in first out: two workers' worth of these, then the faults.
    counted = [submit(warm_tasks.pid) for _ in range(2 * RECYCLE_AFTER)]
    crashes = submit(warm_tasks.exits, str(tmp_path / "exits"))
    stuck_once = submit(warm_tasks.stuck, str(tmp_path / "stuck-once"))
    stuck_always = submit(warm_tasks.stuck, str(tmp_path / "stuck-always"), True)
    ids = [*counted, crashes, stuck_once, stuck_always]
    workers = deployment.start_workers()

    def ended() -> dict[str, Job | None] | None:
        rows = deployment.rows(ids)
        return rows if all(row is not None and row.status.value in TERMINAL for row in rows.values()) else None

    rows = wait_for(ended, 120, "every job to end", max_interval_s=1.0)
    tally = record(_tally("warm workers: stuck past timeout, os._exit, recycled", rows))
    assert_nothing_lost(tally, failed=1)
    assert workers.alive

    pids = [rows[job_id].result["pid"] for job_id in counted]  # type: ignore[union-attr]
    # Three jobs in one process, then a fresh worker: no fork per job, a new process after WORKER_MAX_JOBS.
    assert pids[:RECYCLE_AFTER] == [pids[0]] * RECYCLE_AFTER
    assert pids[RECYCLE_AFTER:] == [pids[-1]] * RECYCLE_AFTER
    assert pids[0] != pids[-1]
    assert all(rows[job_id].attempts == 1 for job_id in counted)  # type: ignore[union-attr]

    crashed = rows[crashes]
    assert crashed is not None
    assert (crashed.status, crashed.attempts) == (JobStatus.FINISHED, 2)
    assert any("the worker running the job died" in line["message"] for line in crashed.logs), crashed.logs

    for job_id, status in ((stuck_once, JobStatus.FINISHED), (stuck_always, JobStatus.FAILED)):
        row = rows[job_id]
        assert row is not None
        assert (row.status, row.attempts) == (status, 2), row.logs
        killed = [line for line in row.logs if "watchdog" in line["message"]]
        assert len(killed) == row.attempts - (status is JobStatus.FINISHED), row.logs
    assert rows[stuck_always].error == "the worker running the job died"  # type: ignore[union-attr]
