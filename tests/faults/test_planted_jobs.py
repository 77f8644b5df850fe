"""Jobs planted in Redis by someone who can write to it: nothing outside the allow-list runs."""

from __future__ import annotations

import json
import os
import pickle
import zlib
from collections.abc import Callable
from pathlib import Path

from core.models import utcnow
from redis_client import KitQueue, get_queue
from tests.faults.cluster import Cluster, Tally, assert_nothing_lost
from tests.support.processes import wait_for


class _Exploit:
    """Runs a shell command when unpickled: what a pickle-serialized queue would execute."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def _plant(cluster: Cluster, job_id: str, data: bytes) -> None:
    queue = get_queue("audio_analysis", cluster.redis.client())
    connection = queue.connection
    now = utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    connection.hset(
        f"rq:job:{job_id}",
        mapping={
            "data": zlib.compress(data),
            "origin": "audio_analysis",
            "description": "planted",
            "status": "queued",
            "created_at": now,
            "enqueued_at": now,
            "timeout": 60,
        },
    )
    connection.rpush(queue.key, job_id)


def _failure(queue: KitQueue, job_id: str) -> str:
    job = queue.fetch_job(job_id)
    result = job.latest_result() if job else None
    return (result.exc_string or "") if result else ""


def test_planted_jobs_naming_other_functions_or_carrying_pickles_run_nothing(
    cluster: Callable[..., Cluster], record: Callable[[Tally], Tally], tmp_path: Path
) -> None:
    deployment = cluster()
    deployment.start_api()
    deployment.start_workers()
    shell_marker, pickle_marker = tmp_path / "pwned-by-name", tmp_path / "pwned-by-pickle"
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Exploit(f"touch {control}")))  # noqa: S301 - proves the payload is live
    assert control.exists()
    _plant(deployment, "planted-os-system", json.dumps(["os.system", None, [f"touch {shell_marker}"], {}]).encode())
    _plant(deployment, "planted-pickle", pickle.dumps((_Exploit(f"touch {pickle_marker}"), None, [], {})))
    attempted, ids = deployment.upload(3)  # ordinary work around them still runs
    deployment.drain(ids)

    queue = get_queue("audio_analysis", deployment.redis.client())
    wait_for(lambda: len(queue.failed_job_registry.get_job_ids()) == 2, 30, "both planted jobs to fail")
    assert "'os.system' is not on the allow-list; nothing was run" in _failure(queue, "planted-os-system")
    assert "job payload is not valid JSON; nothing was run" in _failure(queue, "planted-pickle")
    assert not shell_marker.exists()
    assert not pickle_marker.exists()
    tally = record(deployment.tally("planted os.system + pickle jobs (2 refused, 0 run)", attempted, ids))
    assert_nothing_lost(tally)
