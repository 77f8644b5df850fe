"""Failed jobs at scale: the dead-letter listing, `POST /jobs/retry`, and a requeue by RQ's own tools."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from core.db import get_database
from core.models import DispatchMode, Job, JobStatus, utcnow
from core.settings import Settings
from jobs import task
from jobs.execute import run_job
from jobs.listing import MAX_PAGE
from jobs.runtime import Runtime
from jobs.services import JobServices
from jobs.web.schemas import MAX_BULK_RETRY
from redis_client import get_queue
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.analyses import drain, submitter
from tests.support.processes import wait_for

ADMIN = {"X-API-Key": ADMIN_KEY}
T0 = utcnow().replace(microsecond=0) - timedelta(days=1)


@task(queue="audio_analysis", retry=0)
def fails_once(marker: str) -> dict[str, Any]:
    """Fails on its first run (leaving the file `marker`), succeeds on any later one."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        raise RuntimeError("first run fails")
    return {"runs": "again"}


def _failed_on_rq(runtime: Runtime, tmp_path: Path, count: int) -> list[str]:
    """`count` jobs that ran on RQ (SimpleWorker) and failed for good: rows `failed`, RQ jobs in the failed registry."""
    kit = submitter(runtime)
    ids = []
    for n in range(count):
        job = kit.build(fails_once, [str(tmp_path / f"ran-{n}")])
        kit.submit(job)
        ids.append(job.id)
    drain(runtime.redis)
    assert {runtime.lifecycle.require(job_id).status for job_id in ids} == {JobStatus.FAILED}
    return ids


def _add_failed(settings: Settings, count: int, *, mode: DispatchMode = DispatchMode.RQ, **values: Any) -> list[str]:
    """`count` failed rows straight into the database, created in ties of 7 at the same second."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    jobs = [
        Job(
            id=job_id,
            task=values.get("task", "tasks.dead"),
            status=JobStatus.FAILED,
            queue=values.get("queue", "audio_analysis"),
            mode=mode,
            timeout_s=60,
            created_at=T0 + timedelta(seconds=n // 7),
            updated_at=T0,
            finished_at=values.get("finished_at", T0 + timedelta(hours=1)),
            error=values.get("error", f"ValueError: bad input {n}"),
            args=values.get("args", []),
            kwargs={},
        )
        for n, job_id in enumerate(ids)
    ]
    with get_database(settings.database_url).session() as session:
        session.add_all(jobs)
    return ids


@pytest.fixture
def rq_app(make_runtime: Callable[..., Runtime]) -> Iterator[tuple[Runtime, TestClient]]:
    runtime = make_runtime(use_rq_queue=True)
    with TestClient(create_app(runtime.settings)) as client:
        yield runtime, client


def test_two_thousand_failed_jobs_list_in_bounded_pages_without_gaps_or_repeats(
    rq_app: tuple[Runtime, TestClient],
) -> None:
    runtime, client = rq_app
    failed = set(_add_failed(runtime.settings, 2000))
    _add_failed(runtime.settings, 1, task="tasks.other")
    with get_database(runtime.settings.database_url).session() as session:
        session.add(
            Job(
                id="queued-one",
                task="tasks.dead",
                status=JobStatus.QUEUED,
                queue="audio_analysis",
                mode=DispatchMode.RQ,
                timeout_s=60,
                created_at=T0,
                updated_at=T0,
                args=[],
                kwargs={},
            )
        )

    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"status": "failed", "task": "tasks.dead", "limit": MAX_PAGE}
        answer = client.get("/jobs", params=params | ({"cursor": cursor} if cursor else {}), headers=ADMIN)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json()["items"])
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    listed = [item["id"] for page in pages for item in page]

    assert [len(page) for page in pages] == [MAX_PAGE] * 10
    assert len(listed) == len(set(listed)) == 2000  # no repeats
    assert set(listed) == failed  # no gaps, nothing else
    keys = [(item["created_at"], item["id"]) for page in pages for item in page]
    assert keys == sorted(keys, reverse=True)  # newest first, ties by id
    over = client.get("/jobs", params={"status": "failed", "limit": MAX_PAGE + 1}, headers=ADMIN)
    assert over.status_code == 422


def test_failed_jobs_are_filtered_by_failure_time_and_error_text(rq_app: tuple[Runtime, TestClient]) -> None:
    runtime, client = rq_app
    early = _add_failed(runtime.settings, 2, finished_at=T0, error="Timeout: analysis server slow")
    late = _add_failed(runtime.settings, 2, finished_at=T0 + timedelta(hours=2), error="CorruptAudio: 100%_lost")

    def ids(**params: Any) -> set[str]:
        answer = client.get("/jobs", params={"status": "failed"} | params, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        return {item["id"] for item in answer.json()["items"]}

    middle = (T0 + timedelta(hours=1)).isoformat()
    assert ids(since=middle) == set(late)
    assert ids(until=middle) == set(early)
    assert ids(since=T0.isoformat(), until=middle) == set(early)
    assert ids(error_contains="SERVER SLOW") == set(early)  # any case
    assert ids(error_contains="100%_") == set(late)  # % and _ are literal
    assert ids(error_contains="0%x") == set()
    for bad in ("2026-01-01T00:00:00", "0001-01-01T00:00:00+01:00"):  # no zone; before year 1 in UTC
        answer = client.get("/jobs", params={"since": bad}, headers=ADMIN)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"]


def test_bulk_retry_runs_every_matching_failed_job_again_on_rq(
    rq_app: tuple[Runtime, TestClient], tmp_path: Path
) -> None:
    runtime, client = rq_app
    ids = _failed_on_rq(runtime, tmp_path, 5)
    finished = _add_failed(runtime.settings, 1, task="tasks.elsewhere")

    answer = client.post("/jobs/retry", json={"task": f"{__name__}.fails_once"}, headers=ADMIN)
    drain(runtime.redis)
    again = client.post("/jobs/retry", json={"task": f"{__name__}.fails_once"}, headers=ADMIN)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["retried"], set(body["retried_ids"]), body["skipped"], body["more"]) == (5, set(ids), [], False)
    for job_id in ids:
        row = runtime.lifecycle.require(job_id)
        assert (row.status, row.attempts, row.result) == (JobStatus.FINISHED, 2, {"runs": "again"})
        assert "retry requested" in [line["message"] for line in row.logs]
    assert runtime.lifecycle.require(finished[0]).status is JobStatus.FAILED  # another task: untouched
    assert again.json() == {"retried": 0, "retried_ids": [], "skipped": [], "more": False}
    assert get_queue("audio_analysis", runtime.redis).failed_job_registry.count == 0


def test_bulk_retry_names_each_id_it_did_not_retry_and_why(rq_app: tuple[Runtime, TestClient], tmp_path: Path) -> None:
    runtime, client = rq_app
    failed = _failed_on_rq(runtime, tmp_path, 2)
    other_task = _add_failed(runtime.settings, 1, task="tasks.elsewhere")
    with get_database(runtime.settings.database_url).session() as session:
        session.add(
            Job(
                id="done-one",
                task="tasks.dead",
                status=JobStatus.FINISHED,
                queue="audio_analysis",
                mode=DispatchMode.RQ,
                timeout_s=60,
                created_at=T0,
                updated_at=T0,
                args=[],
                kwargs={},
            )
        )
    body = {"task": f"{__name__}.fails_once", "ids": [*failed, *other_task, "done-one", "nope"]}

    answer = client.post("/jobs/retry", json=body, headers=ADMIN)

    assert answer.status_code == 200, answer.text
    assert set(answer.json()["retried_ids"]) == set(failed)
    assert answer.json()["skipped"] == [
        {"id": other_task[0], "reason": "does not match the filter"},
        {"id": "done-one", "reason": "job is finished; only failed jobs can be retried"},
        {"id": "nope", "reason": "no job with id 'nope'"},
    ]


def test_bulk_retry_stops_at_its_limit_and_says_more_remain(rq_app: tuple[Runtime, TestClient]) -> None:
    runtime, client = rq_app
    _add_failed(runtime.settings, 7, mode=DispatchMode.RQ, task="tasks.dead")

    first = client.post("/jobs/retry", json={"task": "tasks.dead", "limit": 5}, headers=ADMIN).json()
    second = client.post("/jobs/retry", json={"task": "tasks.dead", "limit": 5}, headers=ADMIN).json()

    assert (first["retried"], first["more"]) == (5, True)
    assert (second["retried"], second["more"]) == (2, False)
    assert not set(first["retried_ids"]) & set(second["retried_ids"])


def test_concurrent_bulk_retries_retry_each_job_once(rq_app: tuple[Runtime, TestClient]) -> None:
    runtime, client = rq_app
    ids = set(_add_failed(runtime.settings, 300, task="tasks.dead"))
    services: JobServices = client.app.state.jobs  # type: ignore[attr-defined]
    start = threading.Barrier(3)
    answers: list[dict[str, Any]] = []

    def bulk() -> None:
        start.wait()
        answer = client.post("/jobs/retry", json={"task": "tasks.dead", "limit": MAX_BULK_RETRY}, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())

    threads = [threading.Thread(target=bulk) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    retried = [job_id for answer in answers for job_id in answer["retried_ids"]]
    assert len(retried) == len(set(retried)) == 300  # each exactly once, by one of the three
    assert set(retried) == ids
    skipped = [item for answer in answers for item in answer["skipped"]]
    assert all("only failed jobs can be retried" in item["reason"] for item in skipped)
    queued = get_queue("audio_analysis", runtime.redis)
    assert sorted(queued.get_job_ids()) == sorted(ids)  # one RQ job each, none twice
    for job_id in ids:
        assert services.lifecycle.require(job_id).status is JobStatus.QUEUED


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"status": "finished"}, "failed"),
        ({"since": "2026-01-01T00:00:00"}, "timezone"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since must be before until"),
        ({"until": "0001-01-01T00:00:00+01:00"}, "out of range"),
        ({"limit": 0}, "greater than"),
        ({"limit": MAX_BULK_RETRY + 1}, "less than"),
        ({"ids": []}, "at least 1"),
        ({"ids": ["x" * 65]}, "at most 64"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_bulk_retry_answers_422_for_a_bad_filter(
    rq_app: tuple[Runtime, TestClient], body: dict[str, Any], words: str
) -> None:
    _, client = rq_app
    answer = client.post("/jobs/retry", json=body, headers=ADMIN)

    assert answer.status_code == 422, answer.text
    assert words in str(answer.json()["detail"])


def test_bulk_retry_needs_the_admin_key(rq_app: tuple[Runtime, TestClient]) -> None:
    _, client = rq_app
    assert client.post("/jobs/retry", json={}).status_code == 401


def test_bulk_retry_in_process_runs_the_jobs_in_the_api_process(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings(use_rq_queue=False)
    markers = [tmp_path / f"ran-{n}" for n in range(3)]
    for marker in markers:
        marker.touch()  # the first run "happened": the retry succeeds
    ids = [
        _add_failed(settings, 1, mode=DispatchMode.BACKGROUND, task=f"{__name__}.fails_once", args=[str(marker)])[0]
        for marker in markers
    ]
    with TestClient(create_app(settings)) as client:
        answer = client.post("/jobs/retry", json={"ids": ids}, headers=ADMIN)

        def ended() -> list[dict[str, Any]] | None:
            rows = [client.get(f"/jobs/{job_id}").json() for job_id in ids]
            return rows if all(row["status"] == "finished" for row in rows) else None

        rows = wait_for(ended, 30, "retried jobs to finish in-process")

    assert answer.status_code == 200, answer.text
    assert answer.json()["retried"] == 3
    assert [(row["mode"], row["attempts"], row["result"]) for row in rows] == [("background", 1, {"runs": "again"})] * 3


def test_a_failed_job_requeued_by_rq_tools_is_run_again_as_a_retry(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    runtime = make_runtime(use_rq_queue=True)
    [job_id] = _failed_on_rq(runtime, tmp_path, 1)

    get_queue("audio_analysis", runtime.redis).failed_job_registry.requeue(job_id)  # what `rq requeue` does
    drain(runtime.redis)

    row = runtime.lifecycle.require(job_id)
    assert (row.status, row.attempts, row.result, row.error) == (JobStatus.FINISHED, 2, {"runs": "again"}, None)
    messages = [line["message"] for line in row.logs]
    assert messages.index("requeued by RQ tools: run again as a retry") > messages.index(
        "failed: RuntimeError: first run fails"
    )


def test_a_failed_job_run_again_outside_rq_is_still_not_run(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    runtime = make_runtime(use_rq_queue=True)
    [job_id] = _failed_on_rq(runtime, tmp_path, 1)

    assert run_job(job_id) is None  # not an RQ requeue: the ended job is left alone

    row = runtime.lifecycle.require(job_id)
    assert (row.status, row.attempts) == (JobStatus.FAILED, 1)
