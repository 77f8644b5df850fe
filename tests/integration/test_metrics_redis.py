"""Waiting and Redis-memory metrics, read at scrape time from a real Redis holding real RQ jobs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

import app.metrics_redis
from app.main import create_app
from core.redis_memory import read_memory
from core.settings import QUEUE_HIGH, QUEUE_NORMAL, QUEUES_BY_PRIORITY
from jobs.backlog import read_backlog
from redis_client import RUN_JOB, get_queue
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.audio import wav_bytes

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def enqueued_at(connection: redis.Redis, job_id: str) -> float:
    job = get_queue(QUEUE_NORMAL, connection).fetch_job(job_id)
    assert job is not None
    assert job.enqueued_at is not None
    return job.enqueued_at.timestamp()


def test_oldest_waiting_age_is_that_of_the_first_job_on_the_list(redis_conn: redis.Redis) -> None:
    queue = get_queue(QUEUE_NORMAL, redis_conn)
    first = queue.enqueue(RUN_JOB, "first")
    second = queue.enqueue(RUN_JOB, "second")
    start = enqueued_at(redis_conn, first.id)
    assert enqueued_at(redis_conn, second.id) >= start

    backlog = read_backlog(redis_conn, QUEUES_BY_PRIORITY, now=start + 42)

    assert backlog[QUEUE_NORMAL].oldest_waiting_s == pytest.approx(42, abs=0.01)
    assert backlog[QUEUE_HIGH].oldest_waiting_s == 0  # nothing waits there
    assert backlog[QUEUE_NORMAL].scheduled_overdue_s == 0


def test_a_job_put_at_the_front_does_not_hide_the_older_ones(redis_conn: redis.Redis) -> None:
    queue = get_queue(QUEUE_NORMAL, redis_conn)
    old = queue.enqueue(RUN_JOB, "old")
    queue.enqueue(RUN_JOB, "urgent", at_front=True)

    backlog = read_backlog(redis_conn, (QUEUE_NORMAL,), now=enqueued_at(redis_conn, old.id) + 30)

    assert backlog[QUEUE_NORMAL].oldest_waiting_s == pytest.approx(30, abs=0.01)


def test_a_listed_job_without_its_hash_is_skipped(redis_conn: redis.Redis) -> None:
    queue = get_queue(QUEUE_NORMAL, redis_conn)
    gone = queue.enqueue(RUN_JOB, "gone")
    kept = queue.enqueue(RUN_JOB, "kept")
    redis_conn.delete(gone.key)  # the id stays on the list, as after a lost write or an expiry
    at = enqueued_at(redis_conn, kept.id)

    assert read_backlog(redis_conn, (QUEUE_NORMAL,), now=at + 5)[QUEUE_NORMAL].oldest_waiting_s == pytest.approx(5)


def test_an_enqueued_at_rq_did_not_write_is_skipped(redis_conn: redis.Redis) -> None:
    queue = get_queue(QUEUE_NORMAL, redis_conn)
    odd = queue.enqueue(RUN_JOB, "odd")
    kept = queue.enqueue(RUN_JOB, "kept")
    redis_conn.hset(odd.key, "enqueued_at", "yesterday")
    at = enqueued_at(redis_conn, kept.id)

    assert read_backlog(redis_conn, (QUEUE_NORMAL,), now=at + 5)[QUEUE_NORMAL].oldest_waiting_s == pytest.approx(5)


def test_a_due_scheduled_job_counts_as_overdue_a_future_one_does_not(redis_conn: redis.Redis) -> None:
    queue = get_queue(QUEUE_NORMAL, redis_conn)
    due = datetime.now(UTC) + timedelta(minutes=10)
    queue.enqueue_at(due, RUN_JOB, "later")

    assert read_backlog(redis_conn, (QUEUE_NORMAL,), now=due.timestamp() - 60)[QUEUE_NORMAL].scheduled_overdue_s == 0
    late = read_backlog(redis_conn, (QUEUE_NORMAL,), now=due.timestamp() + 90)[QUEUE_NORMAL]
    assert late.scheduled_overdue_s == pytest.approx(90, abs=1)  # RQ stores the due time in whole seconds
    assert late.oldest_waiting_s == 0  # not on the list yet


def test_redis_memory_reports_use_limit_and_policy(redis_conn: redis.Redis) -> None:
    redis_conn.config_set("maxmemory", 256 * 1024 * 1024)

    memory = read_memory(redis_conn)

    assert memory.max_bytes == 256 * 1024 * 1024
    assert 0 < memory.used_bytes < memory.max_bytes
    assert memory.policy == redis_conn.config_get("maxmemory-policy")["maxmemory-policy"]
    assert memory.version.split(".")[0].isdigit()


@contextlib.contextmanager
def eviction_policy(connection: redis.Redis, policy: str) -> Iterator[None]:
    """Sets a policy on the session's Redis for a while (the API refuses to start with one that evicts)."""
    before = connection.config_get("maxmemory-policy")["maxmemory-policy"] or "noeviction"
    connection.config_set("maxmemory-policy", policy)
    try:
        yield
    finally:
        connection.config_set("maxmemory-policy", before)


def scrape(client: TestClient) -> dict[str, Metric]:
    response = client.get("/metrics", headers=ADMIN)
    assert response.status_code == 200, response.text
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(families: dict[str, Metric], family: str, **labels: str) -> float:
    found = [sample.value for sample in families[family].samples if sample.labels == labels]
    assert len(found) == 1, (family, labels, families[family].samples)
    return found[0]


def test_metrics_report_an_upload_waiting_without_workers_and_redis_memory(
    make_settings: SettingsFactory, redis_conn: redis.Redis
) -> None:
    redis_conn.config_set("maxmemory", 512 * 1024 * 1024)
    settings = make_settings(use_rq_queue=True)  # no worker runs: the upload stays on its queue
    with TestClient(create_app(settings)) as client:
        before = time.time()
        answer = client.post("/audio", files={"file": ("tone.wav", wav_bytes(0.5), "audio/wav")})
        assert answer.status_code == 202, answer.text
        with eviction_policy(redis_conn, "allkeys-lru"):  # changed on the server after the API started
            families = scrape(client)
        scraped = time.time()

    assert value(families, "audiokit_use_rq_queue") == 1
    oldest = "audiokit_queue_oldest_job_age_seconds"
    assert 0 <= value(families, oldest, queue=QUEUE_NORMAL) <= scraped - before
    assert value(families, oldest, queue=QUEUE_HIGH) == 0
    assert value(families, "audiokit_scheduled_overdue_seconds", queue=QUEUE_NORMAL) == 0
    assert value(families, "audiokit_queue_jobs", queue=QUEUE_NORMAL, registry="queued") == 1

    assert value(families, "audiokit_redis_memory_max_bytes") == 512 * 1024 * 1024
    assert 0 < value(families, "audiokit_redis_memory_used_bytes") < 512 * 1024 * 1024
    info = families["audiokit_redis_info"].samples
    assert [(sample.name, sample.labels["maxmemory_policy"], sample.value) for sample in info] == [
        ("audiokit_redis_info", "allkeys-lru", 1)
    ]


def test_a_redis_that_refuses_info_leaves_out_only_the_memory_metrics(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(connection: redis.Redis) -> None:
        raise redis.exceptions.ResponseError("unknown command 'INFO'")  # as a managed Redis that renamed it

    monkeypatch.setattr(app.metrics_redis, "read_memory", refuse)
    with TestClient(create_app(make_settings(use_rq_queue=True))) as client:
        families = scrape(client)

    assert value(families, "audiokit_redis_up") == 1
    assert value(families, "audiokit_queue_oldest_job_age_seconds", queue=QUEUE_NORMAL) == 0
    assert not {"audiokit_redis_memory_used_bytes", "audiokit_redis_memory_max_bytes", "audiokit_redis_info"} & set(
        families
    )


def test_an_api_running_jobs_itself_says_so(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(use_rq_queue=False))) as client:
        families = scrape(client)

    assert value(families, "audiokit_use_rq_queue") == 0  # AudiokitNoWorkers stays quiet: no worker is expected
