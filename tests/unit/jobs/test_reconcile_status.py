"""The reconciler records its passes; readiness judges the record, with a start-up grace."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.settings import Settings
from jobs.dispatch import Dispatcher
from jobs.reconcile import Reconciler
from jobs.reconcile_status import PassRecord, late_after_s, read_passes, reconciler_problem
from jobs.runtime import Runtime, build_runtime

INTERVAL_S = 30  # late after 90 s


def _reconciler(runtime: Runtime) -> Reconciler:
    dispatcher = Dispatcher(runtime.settings, runtime.redis, None, runtime.lifecycle)
    return Reconciler(runtime.settings, runtime.lifecycle, runtime.redis, dispatcher)


def test_late_means_three_intervals_with_a_floor_for_tiny_intervals() -> None:
    assert late_after_s(30) == 90
    assert late_after_s(1) == 15


@pytest.mark.parametrize(
    ("record", "uptime_s"),
    [
        pytest.param(PassRecord(None, None, None), 10, id="fresh deployment, first pass not due yet"),
        pytest.param(PassRecord(None, 5, "OperationalError: boom"), 80, id="first passes failing, still in grace"),
        pytest.param(PassRecord(20, None, None), 3600, id="recent success"),
        pytest.param(PassRecord(20, 2, "OperationalError: boom"), 3600, id="one failure after a recent success"),
        pytest.param(PassRecord(86400, None, None), 30, id="restarted after a long stop, in grace"),
    ],
)
def test_the_reconciler_is_fine(record: PassRecord, uptime_s: float) -> None:
    assert reconciler_problem(record, interval_s=INTERVAL_S, uptime_s=uptime_s) is None


def test_no_successful_pass_past_the_start_up_grace_is_a_problem() -> None:
    problem = reconciler_problem(PassRecord(None, None, None), interval_s=INTERVAL_S, uptime_s=91)

    assert problem == "no successful pass recorded (expected every 30 s)"


def test_a_stale_success_is_a_problem_that_says_why_the_later_passes_failed() -> None:
    record = PassRecord(400, 12, "OperationalError: no such table: jobs")

    problem = reconciler_problem(record, interval_s=INTERVAL_S, uptime_s=3600)

    assert problem == (
        "last successful pass 400 s ago (expected every 30 s); "
        "last pass failed 12 s ago: OperationalError: no such table: jobs"
    )


def test_a_pass_records_its_success(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()

    _reconciler(runtime).run_once()

    record = read_passes(runtime.redis)
    assert record.succeeded_s_ago is not None
    assert record.succeeded_s_ago >= 0
    assert record.failed_s_ago is None


def test_a_pass_that_fails_records_why_and_still_raises(make_runtime: Callable[..., Runtime]) -> None:
    healthy = make_runtime()
    _reconciler(healthy).run_once()
    # The same deployment's reconciler, pointed at a database without the schema (a wrong DATABASE_URL).
    settings: Settings = healthy.settings.model_copy(
        update={"database_url": f"sqlite:///{healthy.settings.storage_dir.parent / 'elsewhere.db'}"}
    )
    broken = build_runtime(settings)

    with pytest.raises(Exception, match="no such table"):
        _reconciler(broken).run_once()

    record = read_passes(healthy.redis)
    assert record.failed_s_ago is not None
    assert record.succeeded_s_ago is not None
    assert record.failed_s_ago <= record.succeeded_s_ago
    assert record.error == "OperationalError: (sqlite3.OperationalError) no such table: jobs"  # first line only
