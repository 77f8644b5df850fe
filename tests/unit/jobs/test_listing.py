"""Listing jobs for operators: filters, newest first, and a cursor that neither skips nor repeats a job."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from core.db import Database, get_database
from core.errors import MalformedUpload
from core.models import DispatchMode, Job, JobStatus, utcnow
from core.settings import Settings
from jobs.listing import MAX_PAGE, Count, JobFilter, count_jobs, decode_cursor, encode_cursor, list_jobs
from tests.conftest import ADMIN_KEY

T0 = utcnow().replace(microsecond=0) - timedelta(days=1)


@pytest.fixture
def database(settings: Settings) -> Database:
    return get_database(settings.database_url)


def _add(
    database: Database,
    *,
    task: str = "tasks.a",
    status: JobStatus = JobStatus.QUEUED,
    queue: str = "audio_analysis",
    created_at: datetime = T0,
) -> str:
    job_id = uuid.uuid4().hex
    job = Job(
        id=job_id,
        task=task,
        status=status,
        queue=queue,
        mode=DispatchMode.RQ,
        timeout_s=60,
        created_at=created_at,
        updated_at=created_at,
    )
    with database.session() as session:
        session.add(job)
    return job_id


def _all_pages(database: Database, where: JobFilter, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = list_jobs(database, where, limit, cursor)
        pages.append([job.id for job in page.jobs])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def test_jobs_are_filtered_by_task_status_and_queue(database: Database) -> None:
    a_queued = _add(database, task="tasks.a", status=JobStatus.QUEUED, queue="q1")
    a_failed = _add(database, task="tasks.a", status=JobStatus.FAILED, queue="q2")
    b_failed = _add(database, task="tasks.b", status=JobStatus.FAILED, queue="q1")

    def ids(where: JobFilter) -> set[str]:
        return {job.id for job in list_jobs(database, where, MAX_PAGE).jobs}

    assert ids(JobFilter()) == {a_queued, a_failed, b_failed}
    assert ids(JobFilter(task="tasks.a")) == {a_queued, a_failed}
    assert ids(JobFilter(status=JobStatus.FAILED)) == {a_failed, b_failed}
    assert ids(JobFilter(queue="q1")) == {a_queued, b_failed}
    assert ids(JobFilter(task="tasks.a", status=JobStatus.FAILED, queue="q2")) == {a_failed}
    assert ids(JobFilter(task="tasks.c")) == set()


def test_pages_run_newest_first_and_a_cursor_neither_skips_nor_repeats_jobs_created_at_once(
    database: Database,
) -> None:
    older = _add(database, created_at=T0 - timedelta(seconds=1))
    same_moment = [_add(database, created_at=T0) for _ in range(5)]  # one batch, one timestamp
    newer = _add(database, created_at=T0 + timedelta(seconds=1))

    pages = _all_pages(database, JobFilter(), limit=2)

    listed = [job_id for page in pages for job_id in page]
    assert [len(page) for page in pages] == [2, 2, 2, 1]
    assert listed == [newer, *sorted(same_moment, reverse=True), older]


def test_a_last_page_that_is_exactly_full_has_no_next_cursor(database: Database) -> None:
    for _ in range(4):
        _add(database)

    assert [len(page) for page in _all_pages(database, JobFilter(), limit=2)] == [2, 2]


def test_the_cursor_keeps_the_filter_across_pages(database: Database) -> None:
    wanted = {_add(database, status=JobStatus.FAILED, created_at=T0 + timedelta(seconds=i)) for i in range(5)}
    for i in range(5):
        _add(database, status=JobStatus.FINISHED, created_at=T0 + timedelta(seconds=i))

    pages = _all_pages(database, JobFilter(status=JobStatus.FAILED), limit=2)

    assert {job_id for page in pages for job_id in page} == wanted
    assert sum(len(page) for page in pages) == 5


def test_the_page_size_is_kept_between_one_and_the_maximum(database: Database) -> None:
    for _ in range(3):
        _add(database)

    assert len(list_jobs(database, JobFilter(), 0).jobs) == 1
    assert len(list_jobs(database, JobFilter(), MAX_PAGE + 1000).jobs) == 3


def test_jobs_are_counted_per_task_and_status_in_the_order_of_the_lifecycle(database: Database) -> None:
    for task, status in [
        ("tasks.b", JobStatus.FAILED),
        ("tasks.a", JobStatus.FINISHED),
        ("tasks.a", JobStatus.QUEUED),
        ("tasks.a", JobStatus.FINISHED),
        ("tasks.b", JobStatus.FAILED),
        ("tasks.b", JobStatus.PENDING),
    ]:
        _add(database, task=task, status=status)

    assert count_jobs(database) == [
        Count("tasks.a", JobStatus.QUEUED, 1),
        Count("tasks.a", JobStatus.FINISHED, 2),
        Count("tasks.b", JobStatus.PENDING, 1),
        Count("tasks.b", JobStatus.FAILED, 2),
    ]


def test_no_jobs_count_as_nothing(database: Database) -> None:
    assert count_jobs(database) == []


def _encoded(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        _encoded("yesterday|abc"),
        _encoded(f"{T0.isoformat()}|"),
        _encoded(f"{T0.replace(tzinfo=None).isoformat()}|abc"),
        base64.urlsafe_b64encode(b"\xff\xfe|abc").decode(),
    ],
    ids=["not base64", "not a time", "no id", "no time zone", "not utf-8"],
)
def test_a_cursor_this_api_did_not_give_out_is_a_client_error(database: Database, cursor: str) -> None:
    with pytest.raises(MalformedUpload, match="cursor is not one this API gave out"):
        list_jobs(database, JobFilter(), 10, cursor)


def test_a_cursor_given_out_reads_back() -> None:
    job = Job(id="abc", created_at=T0)

    assert decode_cursor(encode_cursor(job)) == (T0, "abc")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_get_jobs_answers_422_with_a_readable_detail_for_a_bad_cursor(client: TestClient) -> None:
    answer = client.get("/jobs", params={"cursor": "not a cursor!"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})

    assert answer.status_code == 422
    assert "cursor is not one this API gave out" in str(answer.json()["detail"])


def test_the_job_summary_is_for_the_admin_and_counts_per_task_and_status(
    client: TestClient, database: Database
) -> None:
    _add(database, task="tasks.a", status=JobStatus.FAILED)
    _add(database, task="tasks.a", status=JobStatus.FAILED)
    _add(database, task="tasks.b", status=JobStatus.SCHEDULED)

    refused = [client.get("/jobs/summary"), client.get("/jobs/summary", headers={"X-API-Key": "wrong"})]
    answer = client.get("/jobs/summary", headers={"X-API-Key": ADMIN_KEY})

    assert [r.status_code for r in refused] == [401, 401]
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "items": [
            {"task": "tasks.a", "status": "failed", "count": 2},
            {"task": "tasks.b", "status": "scheduled", "count": 1},
        ],
        "total": 3,
    }
