"""RedisJobMetrics: counters and histograms in Redis, shared by processes, never an error to a job."""

from __future__ import annotations

import logging
import math
from typing import Any

import fakeredis
import pytest
import redis

from core.metrics import (
    EVENTS_KEY,
    JOB_DURATION_BUCKETS_S,
    JOB_DURATION_KEY,
    UPLOAD_TO_START_BUCKETS_S,
    HistogramSnapshot,
    JobEvent,
    JobMetrics,
    RedisJobMetrics,
)
from core.settings import QUEUE_HIGH, QUEUE_NORMAL


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def metrics(server: fakeredis.FakeServer) -> RedisJobMetrics:
    return RedisJobMetrics(fakeredis.FakeRedis(server=server))


def bucket(snapshot: HistogramSnapshot, bound: float) -> int:
    """The cumulative count at `bound` (an exact bound of the snapshot)."""
    return dict(snapshot.buckets)[bound]


def test_redis_job_metrics_satisfies_the_protocol(metrics: RedisJobMetrics) -> None:
    recorder: JobMetrics = metrics  # mypy checks the structural match
    assert recorder is metrics


def test_each_hook_counts_its_event_per_queue(metrics: RedisJobMetrics) -> None:
    metrics.started(QUEUE_NORMAL, 1, 0.5)
    metrics.started(QUEUE_NORMAL, 2, None)
    metrics.started(QUEUE_HIGH, 1, 0.1)
    metrics.finished(QUEUE_NORMAL, 1.0)
    metrics.failed(QUEUE_HIGH)
    metrics.retried(QUEUE_NORMAL)
    metrics.retried(QUEUE_NORMAL)
    metrics.canceled(QUEUE_HIGH)

    events = metrics.read().events

    assert events[JobEvent.STARTED] == {QUEUE_HIGH: 1, QUEUE_NORMAL: 2}
    assert events[JobEvent.FINISHED] == {QUEUE_HIGH: 0, QUEUE_NORMAL: 1}
    assert events[JobEvent.FAILED] == {QUEUE_HIGH: 1, QUEUE_NORMAL: 0}
    assert events[JobEvent.RETRIED] == {QUEUE_HIGH: 0, QUEUE_NORMAL: 2}
    assert events[JobEvent.CANCELED] == {QUEUE_HIGH: 1, QUEUE_NORMAL: 0}


def test_known_queues_are_reported_at_zero_before_any_job(metrics: RedisJobMetrics) -> None:
    snapshot = metrics.read()

    assert all(by_queue == {QUEUE_HIGH: 0, QUEUE_NORMAL: 0} for by_queue in snapshot.events.values())
    empty = snapshot.job_duration_s[QUEUE_NORMAL]
    assert (empty.count, empty.sum) == (0, 0.0)
    assert [bound for bound, _ in empty.buckets] == [*JOB_DURATION_BUCKETS_S, math.inf]
    assert all(count == 0 for _, count in empty.buckets)


def test_durations_land_in_cumulative_le_buckets_with_sum_and_count(metrics: RedisJobMetrics) -> None:
    for seconds in (0.03, 0.05, 7.0, 2000.0):  # 0.05 is a bound itself: `le` includes it
        metrics.finished(QUEUE_NORMAL, seconds)

    histogram = metrics.read().job_duration_s[QUEUE_NORMAL]

    assert histogram.count == 4
    assert histogram.sum == pytest.approx(2007.08)
    assert bucket(histogram, 0.05) == 2
    assert bucket(histogram, 5) == 2
    assert bucket(histogram, 10) == 3
    assert bucket(histogram, 900) == 3
    assert histogram.buckets[-1] == (math.inf, 4)
    counts = [count for _, count in histogram.buckets]
    assert counts == sorted(counts)  # cumulative, hence never decreasing
    assert metrics.read().job_duration_s[QUEUE_HIGH].count == 0


def test_upload_to_start_is_observed_only_when_a_wait_is_given(metrics: RedisJobMetrics) -> None:
    metrics.started(QUEUE_HIGH, 1, 0.02)
    metrics.started(QUEUE_HIGH, 2, None)  # a retry: its wait is not an upload-to-start latency

    snapshot = metrics.read()
    histogram = snapshot.upload_to_start_s[QUEUE_HIGH]

    assert snapshot.events[JobEvent.STARTED][QUEUE_HIGH] == 2
    assert histogram.count == 1
    assert histogram.sum == pytest.approx(0.02)
    assert bucket(histogram, UPLOAD_TO_START_BUCKETS_S[0]) == 0
    assert bucket(histogram, 0.025) == 1


def test_a_finish_without_duration_counts_but_is_not_timed(metrics: RedisJobMetrics) -> None:
    metrics.finished(QUEUE_NORMAL, None)  # the reconciler's repair knows no run duration

    snapshot = metrics.read()

    assert snapshot.events[JobEvent.FINISHED][QUEUE_NORMAL] == 1
    assert snapshot.job_duration_s[QUEUE_NORMAL].count == 0


def test_a_negative_wait_from_clock_skew_counts_as_zero_and_nan_is_dropped(metrics: RedisJobMetrics) -> None:
    metrics.started(QUEUE_NORMAL, 1, -0.3)
    metrics.started(QUEUE_NORMAL, 1, math.nan)

    histogram = metrics.read().upload_to_start_s[QUEUE_NORMAL]

    assert (histogram.count, histogram.sum) == (1, 0.0)
    assert bucket(histogram, UPLOAD_TO_START_BUCKETS_S[0]) == 1


def test_processes_sharing_one_redis_add_up(server: fakeredis.FakeServer) -> None:
    api, worker = (RedisJobMetrics(fakeredis.FakeRedis(server=server)) for _ in range(2))

    api.finished(QUEUE_NORMAL, 1.0)
    worker.finished(QUEUE_NORMAL, 3.0)

    histogram = RedisJobMetrics(fakeredis.FakeRedis(server=server)).read().job_duration_s[QUEUE_NORMAL]
    assert histogram.count == 2
    assert histogram.sum == pytest.approx(4.0)


def test_queues_outside_the_known_ones_are_reported_too(metrics: RedisJobMetrics) -> None:
    metrics.finished("legacy:queue", 0.2)  # a colon in the name must not confuse the field parser

    snapshot = metrics.read()

    assert snapshot.events[JobEvent.FINISHED]["legacy:queue"] == 1
    assert snapshot.job_duration_s["legacy:queue"].count == 1


def test_each_hook_is_one_round_trip(server: fakeredis.FakeServer) -> None:
    class CountingRedis(fakeredis.FakeRedis):
        """Counts pipeline executions; a command sent outside a pipeline fails the test."""

        round_trips = 0

        def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
            pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)
            execute = pipe.execute

            def counted(raise_on_error: bool = True) -> list[Any]:
                CountingRedis.round_trips += 1
                return execute(raise_on_error)

            pipe.execute = counted  # type: ignore[method-assign]
            return pipe

        def execute_command(self, *args: Any, **options: Any) -> Any:
            raise AssertionError(f"a command outside the pipeline: {args[0]}")

    metrics = RedisJobMetrics(CountingRedis(server=server))

    metrics.started(QUEUE_NORMAL, 1, 0.5)
    metrics.finished(QUEUE_NORMAL, 2.0)
    metrics.failed(QUEUE_NORMAL)

    assert CountingRedis.round_trips == 3


def test_redis_errors_are_logged_and_swallowed(
    server: fakeredis.FakeServer, metrics: RedisJobMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    server.connected = False
    caplog.set_level(logging.DEBUG, logger="core.metrics")

    metrics.started(QUEUE_NORMAL, 1, 0.5)
    metrics.finished(QUEUE_NORMAL, 1.0)
    metrics.failed(QUEUE_NORMAL)
    metrics.retried(QUEUE_NORMAL)
    metrics.canceled(QUEUE_NORMAL)

    assert len([r for r in caplog.records if r.levelno == logging.DEBUG and "not recorded" in r.message]) == 5
    server.connected = True
    assert metrics.read().events[JobEvent.STARTED][QUEUE_NORMAL] == 0


def test_reading_without_redis_raises_for_the_scrape_to_report(
    server: fakeredis.FakeServer, metrics: RedisJobMetrics
) -> None:
    server.connected = False

    with pytest.raises(redis.exceptions.ConnectionError):
        metrics.read()


def test_unknown_fields_are_ignored(server: fakeredis.FakeServer, metrics: RedisJobMetrics) -> None:
    fakeredis.FakeRedis(server=server).hset(EVENTS_KEY, "exploded:audio_analysis", 5)

    assert "exploded" not in {event.value for event in metrics.read().events}


def test_an_observation_writes_its_bucket_and_sum_only_and_the_count_is_the_buckets_total(
    server: fakeredis.FakeServer, metrics: RedisJobMetrics
) -> None:
    metrics.finished(QUEUE_NORMAL, 0.2)
    metrics.finished(QUEUE_NORMAL, 7.0)

    stored = fakeredis.FakeRedis(server=server, decode_responses=True).hgetall(JOB_DURATION_KEY)
    snapshot = metrics.read().job_duration_s[QUEUE_NORMAL]

    assert sorted(str(field).split(":")[0] for field in stored) == ["bucket", "bucket", "sum"]
    assert snapshot.count == 2
    assert snapshot.sum == pytest.approx(7.2)
