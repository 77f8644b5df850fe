"""Dependencies on RQ, with an in-process worker: deferred until the parents finish, their results read by
the dependent, and a failed or canceled parent settling its dependents (none left deferred in RQ)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from core.models import JobStatus
from jobs import parent_results
from jobs.dependencies import may_have_dependents
from jobs.dispatch import Dispatcher
from jobs.reconcile import Reconciler
from jobs.registry import task
from jobs.rq_move import Moved, move_waiting
from jobs.runtime import Runtime
from redis_client import KitJob, KitQueue, get_queue
from tests.support.analyses import age_row, submitter

QUEUE = "reports"


@task(name="tests.dependencies.value", queue=QUEUE, retry=0)
def value(number: int) -> dict[str, Any]:
    return {"value": number}


@task(name="tests.dependencies.total", queue=QUEUE, retry=0)
def total() -> dict[str, Any]:
    return {"total": sum(result["value"] for result in parent_results().values()), "parents": list(parent_results())}


@task(name="tests.dependencies.broken", queue=QUEUE, retry=0)
def broken() -> None:
    raise RuntimeError("broken on purpose")


def _work(runtime: Runtime, *queues: str) -> None:
    connection = runtime.redis
    worker = SimpleWorker(
        [get_queue(name, connection) for name in queues or (QUEUE,)],
        connection=connection,
        serializer=JSONSerializer,
        job_class=KitJob,
        queue_class=KitQueue,
    )
    worker.work(burst=True)


def _submit(runtime: Runtime, func: Callable[..., Any], *args: Any, **options: Any) -> str:
    kit = submitter(runtime)
    return kit.submit(kit.build(func, args, **options)).job.id


def _status(runtime: Runtime, job_id: str) -> JobStatus:
    return runtime.lifecycle.require(job_id).status


def test_a_dependent_waits_deferred_until_its_parents_finish_then_reads_their_results(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    first, second = _submit(runtime, value, 2), _submit(runtime, value, 3)
    summed = _submit(runtime, total, depends_on=[first, second])
    deferred = get_queue(QUEUE, runtime.redis).deferred_job_registry.get_job_ids()

    _work(runtime)

    assert deferred == [summed]
    assert f"waits for {first}, {second}" in [line["message"] for line in runtime.lifecycle.require(summed).logs]
    row = runtime.lifecycle.require(summed)
    assert (row.status, row.result) == (JobStatus.FINISHED, {"total": 5, "parents": [first, second]})
    late = _submit(runtime, total, depends_on=[first])  # its parent has finished: queued at once
    assert _status(runtime, late) is JobStatus.QUEUED


def test_a_failed_parent_cancels_or_fails_its_dependents_and_theirs_and_leaves_none_deferred(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    parent = _submit(runtime, broken)
    canceled = _submit(runtime, total, depends_on=[parent])
    failed = _submit(runtime, total, depends_on=[parent], on_dependency_failure="fail")
    grandchild = _submit(runtime, total, depends_on=[canceled])

    _work(runtime)

    statuses = [_status(runtime, job_id) for job_id in (parent, canceled, failed, grandchild)]
    assert statuses == [JobStatus.FAILED, JobStatus.CANCELED, JobStatus.FAILED, JobStatus.CANCELED]
    assert runtime.lifecycle.require(failed).error == f"dependency {parent} failed"
    assert get_queue(QUEUE, runtime.redis).deferred_job_registry.get_job_ids() == []
    after = _submit(runtime, total, depends_on=[parent], on_dependency_failure="fail")  # settled at once
    assert _status(runtime, after) is JobStatus.FAILED


def test_a_deferred_job_moves_to_another_queue_and_runs_from_there_after_its_parent(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    parent = _submit(runtime, value, 1)
    child = _submit(runtime, total, depends_on=[parent], queue="low")

    assert move_waiting(runtime.redis, child, "low", "critical") is Moved.DEFERRED
    _work(runtime, QUEUE, "critical")

    assert _status(runtime, child) is JobStatus.FINISHED
    assert get_queue("low", runtime.redis).deferred_job_registry.get_job_ids() == []


def test_unknown_dependencies_and_bad_options_are_refused_at_submission(make_runtime: Callable[..., Runtime]) -> None:
    kit = submitter(make_runtime())
    with pytest.raises(ValueError, match="no job with id 'nope'"):
        kit.build(total, depends_on=["nope"])
    with pytest.raises(ValueError, match="on_dependency_failure must be one of cancel, fail"):
        kit.build(total, on_dependency_failure="ignore")
    with pytest.raises(TypeError, match="depends_on takes job ids or job handles"):
        kit.build(total, depends_on=[42])
    parent = kit.submit(kit.build(total)).job.id
    with pytest.raises(ValueError, match=r"either after others \(`depends_on`\) or in its key's order"):
        kit.build(total, depends_on=[parent], ordering_key="customer-42")


def test_the_reconciler_settles_a_deferred_job_whose_parent_failed_without_settling_it(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(reconcile_grace_s=60)
    parent = _submit(runtime, value, 1)
    child = _submit(runtime, total, depends_on=[parent])
    runtime.lifecycle.begin_attempt(parent)
    runtime.lifecycle.record_failure(parent, "the worker's settling was lost", retry_in_s=None)  # no after_end
    age_row(runtime, child)
    dispatcher = Dispatcher(runtime.settings, runtime.redis, None, runtime.lifecycle)

    report = Reconciler(runtime.settings, runtime.lifecycle, runtime.redis, dispatcher).run_once()

    assert report.settled == [child]
    assert _status(runtime, child) is JobStatus.CANCELED
    assert get_queue(QUEUE, runtime.redis).deferred_job_registry.get_job_ids() == []


def test_the_reconciler_releases_a_deferred_job_whose_parents_finished_without_rq_releasing_it(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(reconcile_grace_s=60)
    parent = _submit(runtime, value, 4)
    child = _submit(runtime, total, depends_on=[parent])
    runtime.lifecycle.begin_attempt(parent)
    runtime.lifecycle.complete(parent, {"value": 4})  # its worker died before RQ released the child
    age_row(runtime, child)
    dispatcher = Dispatcher(runtime.settings, runtime.redis, None, runtime.lifecycle)

    report = Reconciler(runtime.settings, runtime.lifecycle, runtime.redis, dispatcher).run_once()
    _work(runtime)

    assert report.redispatched == [child]
    assert runtime.lifecycle.require(child).result == {"total": 4, "parents": [parent]}


def test_only_a_job_some_job_waits_for_looks_for_dependents_when_it_ends(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(use_rq_queue=True)
    parent = _submit(runtime, value, 1)
    alone = _submit(runtime, value, 2)
    _submit(runtime, total, depends_on=[parent])

    assert may_have_dependents(runtime.redis, parent)
    assert not may_have_dependents(runtime.redis, alone)  # its end costs no database read
