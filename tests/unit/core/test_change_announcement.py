"""A committed change is counted (metrics) and announced (PUBLISH) in one Redis round trip, the metrics
first, so a listener woken by the notification finds them written; other writes can go along."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.connection

from core.db import get_database
from core.lifecycle import Lifecycle
from core.metrics import JobEvent, RedisJobMetrics
from core.notify import NullNotifier, channel_for
from jobs import task
from jobs.runtime import Runtime
from tests.support.analyses import submitter

pytestmark = pytest.mark.one_database  # Redis traffic is checked, not the database


@task(queue="audio_analysis")
def nothing() -> None:
    """A task the test never runs: its jobs' rows are changed by hand."""


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every request this process sends to Redis from here on (a command, or a pipeline's batch)."""
    sent: list[bytes] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(b"".join(command) if isinstance(command, list) else bytes(command))
        send(self, command, check_health)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


def test_each_change_is_counted_and_announced_in_one_round_trip_the_metrics_before_the_notification(
    make_runtime: Callable[..., Runtime], round_trips: list[bytes]
) -> None:
    runtime = make_runtime()
    kit = submitter(runtime)
    job_id = kit.submit(kit.build(nothing)).job.id
    listener = runtime.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    listener.subscribe(channel_for(job_id))
    listener.get_message(timeout=5)  # the subscription's confirmation
    runtime.redis.ping()  # the client's connection is open: what follows is the changes' traffic alone
    round_trips.clear()

    assert runtime.lifecycle.begin_attempt(job_id) is not None
    assert len(round_trips) == 1
    assert round_trips[0].index(b"HINCRBY") < round_trips[0].index(b"PUBLISH")  # one MULTI/EXEC, metrics first
    assert listener.get_message(timeout=5) is not None
    assert RedisJobMetrics(runtime.redis).read().events[JobEvent.STARTED]["audio_analysis"] == 1

    round_trips.clear()
    assert runtime.lifecycle.finish(job_id, {"ok": 1}, along=[lambda pipe: pipe.set("along", "1")]) is not None
    assert len(round_trips) == 1
    assert listener.get_message(timeout=5) is not None
    assert runtime.redis.get("along") == b"1"
    assert RedisJobMetrics(runtime.redis).read().events[JobEvent.FINISHED]["audio_analysis"] == 1
    listener.close()


def test_metrics_are_counted_when_the_notifier_is_not_redis(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    kit = submitter(runtime)
    job_id = kit.submit(kit.build(nothing)).job.id
    lifecycle = Lifecycle(get_database(runtime.settings.database_url), NullNotifier(), RedisJobMetrics(runtime.redis))

    assert lifecycle.begin_attempt(job_id) is not None
    assert lifecycle.record_failure(job_id, "broken", retry_in_s=None)

    events = RedisJobMetrics(runtime.redis).read().events
    assert (events[JobEvent.STARTED]["audio_analysis"], events[JobEvent.FAILED]["audio_analysis"]) == (1, 1)
