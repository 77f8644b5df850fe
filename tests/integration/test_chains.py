"""Chains: jobs that depend on others, against the real API and real workers, in both modes.

One deployment per mode runs every scenario (they use distinct jobs and gates, so they do not interfere).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.chain_app import CHAIN_APP
from tests.support.chain_tasks import CHAIN_TASK_MODULES
from tests.support.processes import ApiServer, ManagedProcess, wait_for
from tests.support.sample_tasks import SAMPLE_QUEUE

pytestmark = pytest.mark.slow

ADMIN = {"X-API-Key": ADMIN_KEY}
ENDED = ("finished", "failed", "canceled")


@pytest.fixture(params=[True, False], ids=["rq", "in-process"])
def api(
    request: pytest.FixtureRequest,
    make_settings: SettingsFactory,
    workers: Callable[..., ManagedProcess],
    tmp_path: Path,
) -> Iterator[ApiServer]:
    use_rq: bool = request.param
    settings = make_settings(use_rq_queue=use_rq, task_modules=CHAIN_TASK_MODULES, background_concurrency=2)
    server = ApiServer(settings, tmp_path / "api.log", factory=CHAIN_APP)
    try:
        if use_rq:
            workers(settings, "-q", f"high_priority,audio_analysis,{SAMPLE_QUEUE}")
        yield server
    finally:
        server.stop()


def _start(client: httpx.Client, kind: str, **params: Any) -> str:
    answer = client.post(f"/chains/{kind}", params=params)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
    return body


def _ended(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        body = _job(client, job_id)
        return body if body["status"] in ENDED else None

    return wait_for(ended, timeout_s, f"job {job_id} to end")


@pytest.mark.pairwise("api")
def test_dependents_wait_deferred_read_their_parents_results_and_never_outlive_a_failed_parent(
    api: ApiServer, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with api.client() as client:
        # A chain: total waits (deferred) for two steps, one held at its gate; then reads both results.
        first = _start(client, "step", value=2, gate=str(gate))
        second = _start(client, "step", value=3)
        summed = _start(client, "total", after=[first, second])
        waiting = _job(client, summed)
        gate.touch()
        done = _ended(client, summed)

        # A parent that fails after its retry: one dependent is canceled (default), one fails (by option),
        # and the canceled one's own dependent is canceled in turn.
        broken = _start(client, "broken")
        canceled = _start(client, "total", after=[broken])
        failed = _start(client, "total", after=[broken], on_failure="fail")
        grandchild = _start(client, "total", after=[canceled])
        broken_end = _ended(client, broken)
        ends = {job_id: _ended(client, job_id) for job_id in (canceled, failed, grandchild)}

        # A waiting parent canceled on request: its dependent is canceled at once.
        held = tmp_path / "held"
        holder = _start(client, "step", value=1, gate=str(held))
        parent = _start(client, "step", value=1, after=[holder])
        child = _start(client, "total", after=[parent])
        cancel = client.delete(f"/jobs/{parent}/cancel", headers=ADMIN)
        child_end = _ended(client, child)
        held.touch()
        holder_end = _ended(client, holder)
        parent_end = _job(client, parent)

        # After an ended parent: finished runs at once, failed is settled at once.
        late = _start(client, "total", after=[first])
        late_end = _ended(client, late)
        late_canceled = client.post("/chains/total", params={"after": [broken]}).json()
        unknown = client.post("/chains/total", params={"after": ["no-such-job"]})

        # A running parent stopped on request: its dependent is canceled too.
        running = _start(client, "step", value=1, gate=str(tmp_path / "never"))
        behind = _start(client, "total", after=[running])
        wait_for(lambda: _job(client, running)["status"] == "started" or None, 60, "the parent to run")
        stop = client.delete(f"/jobs/{running}/cancel", headers=ADMIN)
        stopped = [_ended(client, job_id)["status"] for job_id in (running, behind)]

    assert waiting["status"] == "deferred"
    assert done["status"] == "finished", done
    assert done["result"] == {"total": 5, "parents": [first, second], "job": summed}

    assert (broken_end["status"], broken_end["attempts"]) == ("failed", 2)
    assert ends[canceled]["status"] == "canceled"
    assert ends[failed]["status"] == "failed"
    assert ends[failed]["error"] == f"dependency {broken} failed"
    assert ends[grandchild]["status"] == "canceled"
    assert all(end["attempts"] == 0 for end in ends.values())  # none of them ran
    assert any(broken in line["message"] for line in ends[canceled]["logs"])

    assert (cancel.status_code, cancel.json()["status"]) == (202, "canceled")
    assert child_end["status"] == "canceled"
    assert holder_end["status"] == "finished"
    assert parent_end["status"] == "canceled"

    assert late_end["result"]["total"] == 2
    assert late_canceled["status"] == "canceled"
    assert unknown.status_code == 422
    assert "no-such-job" in unknown.json()["detail"]

    assert (stop.status_code, stop.json()["stopping"]) == (202, True)
    assert stopped == ["canceled", "canceled"]
