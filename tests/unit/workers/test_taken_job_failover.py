"""A job a worker took from its queue but never registered as started (Redis crashed under the worker, or
lost the registration with the last second of its AOF) is failed over by maintenance after the lease
margin, not after RQ's fixed minute."""

from __future__ import annotations

from datetime import timedelta

import fakeredis
import pytest
from rq import Retry
from rq.utils import now

import redis_client
from core.settings import load_settings
from redis_client import RUN_JOB, KitQueue
from workers.worker import KitWorker

LEASE_MARGIN_S = 5  # the fault suite's margin: RQ's minute is well above it


def test_a_taken_job_without_a_start_is_retried_once_seen_for_the_lease_margin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(env_file="", worker_lease_margin_s=LEASE_MARGIN_S)
    monkeypatch.setattr(redis_client, "get_settings", lambda: settings)
    connection = fakeredis.FakeRedis()
    queue = KitQueue("audio_analysis", connection=connection)
    job = queue.enqueue_call(RUN_JOB, args=("row-id",), retry=Retry(max=1))
    # What a worker on one queue does to take a job (RQ's dequeue on Redis >= 6.2): LMOVE it to the list.
    assert KitQueue.lmove(connection, queue.key, None) is not None
    intermediate = queue.intermediate_queue
    assert intermediate.get_job_ids() == [job.id]
    worker = KitWorker([queue.name], connection=connection)  # another worker: the one that took it is gone

    worker.clean_registries()  # type: ignore[no-untyped-call]  # the first look only notes when it was seen there
    assert intermediate.get_job_ids() == [job.id]
    seen = (now() - timedelta(seconds=LEASE_MARGIN_S + 1)).timestamp()
    connection.set(intermediate.get_first_seen_key(job.id), seen)  # seen one lease margin ago (< RQ's minute)
    connection.delete(queue.registry_cleaning_key)  # the next maintenance round
    worker.clean_registries()  # type: ignore[no-untyped-call]

    assert intermediate.get_job_ids() == []
    assert queue.get_job_ids() == [job.id]  # retried by RQ's own failure handling (its `Retry`)
    assert job.get_status(refresh=True) == "queued"
