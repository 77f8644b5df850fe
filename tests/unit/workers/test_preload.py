"""A worker runs each statement of a job's life once before it forks, so that no work-horse compiles one."""

from __future__ import annotations

from collections.abc import Callable

from jobs import progress, task
from jobs.execute import run_job
from jobs.runtime import Runtime
from tests.support.analyses import submitter
from workers.preload import warm_up_database


@task(queue="audio_analysis")
def reports_twice() -> dict[str, int]:
    progress(30, "a third")
    progress(60)
    return {"ok": 1}


def test_after_the_warm_up_every_statement_of_a_job_is_compiled_already(make_runtime: Callable[..., Runtime]) -> None:
    # Held back until the final write (a short job), and written as they come (a long one's): the final write
    # then checks for a cancel or not, and the reports carry a line or not.
    for interval_ms in (60_000, 0):
        runtime = make_runtime(job_progress_interval_ms=interval_ms)
        kit = submitter(runtime)
        job = kit.submit(kit.build(reports_twice)).job
        warm_up_database()
        cache = runtime.database.engine._compiled_cache
        assert cache is not None
        compiled = len(cache)

        assert run_job(job.id) == {"ok": 1}

        assert len(cache) == compiled, f"progress interval {interval_ms} ms"
