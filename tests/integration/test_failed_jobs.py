"""Failed jobs against the real API and real workers: bulk retry in both modes, and RQ's own tools
(`rq requeue --all`, the dashboard's "Requeue all") running a failed job again to `finished`."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.processes import ApiServer, ManagedProcess, wait_for
from tests.support.sample_app import SAMPLE_APP
from tests.support.sample_tasks import SAMPLE_QUEUE, SAMPLE_TASK_MODULES

pytestmark = pytest.mark.slow

ADMIN = {"X-API-Key": ADMIN_KEY}
ENDED = ("finished", "failed", "canceled")
RQ_CLI = str(Path(sys.executable).with_name("rq"))


@pytest.fixture(params=[True, False], ids=["rq", "in-process"])
def deployment(
    request: pytest.FixtureRequest,
    make_settings: SettingsFactory,
    workers: Callable[..., ManagedProcess],
    tmp_path: Path,
) -> Iterator[tuple[Settings, ApiServer]]:
    """The API with the sample endpoints, and (RQ mode) a real worker serving the sample queue too."""
    settings = make_settings(use_rq_queue=request.param, task_modules=SAMPLE_TASK_MODULES)
    api = ApiServer(settings, tmp_path / "api.log", factory=SAMPLE_APP)
    try:
        if request.param:
            workers(settings, "-q", f"high_priority,audio_analysis,{SAMPLE_QUEUE}")
        yield settings, api
    finally:
        api.stop()


def _ended(client: httpx.Client, job_id: str, wanted: tuple[str, ...] = ENDED) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return body if body["status"] in wanted else None

    return wait_for(ended, 60, f"job {job_id} to reach {wanted}")


def _failed_flaky(client: httpx.Client, tmp_path: Path, count: int) -> list[str]:
    ids = []
    for n in range(count):
        answer = client.post("/samples/flaky", params={"marker": str(tmp_path / f"ran-{n}")})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    assert {_ended(client, job_id)["status"] for job_id in ids} == {"failed"}
    return ids


@pytest.mark.pairwise("deployment", offset=1)  # the claim that retries each job once is made before either mode runs it
def test_concurrent_bulk_retries_run_each_failed_job_once_to_finished(
    deployment: tuple[Settings, ApiServer], tmp_path: Path
) -> None:
    _, api = deployment
    with api.client() as client:
        ids = _failed_flaky(client, tmp_path, 6)
        start = threading.Barrier(2)
        answers: list[httpx.Response] = []

        def bulk() -> None:
            with api.client() as own:
                start.wait()
                answers.append(own.post("/jobs/retry", json={"task": "samples.flaky"}, headers=ADMIN, timeout=60))

        threads = [threading.Thread(target=bulk) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ended = [_ended(client, job_id, ("finished",)) for job_id in ids]
        listed = client.get("/jobs", params={"status": "failed", "task": "samples.flaky"}, headers=ADMIN).json()

    assert [answer.status_code for answer in answers] == [200, 200], [answer.text for answer in answers]
    retried = [job_id for answer in answers for job_id in answer.json()["retried_ids"]]
    assert sorted(retried) == sorted(ids)  # each by exactly one of the two calls
    assert [(job["attempts"], job["result"]) for job in ended] == [(2, {"runs": "again"})] * 6
    assert listed["items"] == []


def _one_failed_on_rq(settings: Settings, api: ApiServer, tmp_path: Path) -> str:
    assert settings.use_rq_queue
    with api.client() as client:
        [job_id] = _failed_flaky(client, tmp_path, 1)
    return job_id


# RQ's requeue by its CLI here and by the dashboard below: the same path back into the service, each
# tool on one database (`pairwise`, the second with `offset=1`).
@pytest.mark.parametrize("deployment", [True], ids=["rq"], indirect=True)
@pytest.mark.pairwise("deployment")
def test_rq_requeue_all_runs_a_failed_job_again_to_finished(
    deployment: tuple[Settings, ApiServer], tmp_path: Path
) -> None:
    settings, api = deployment
    job_id = _one_failed_on_rq(settings, api, tmp_path)
    assert settings.redis_url is not None

    cli = subprocess.run(
        [RQ_CLI, "requeue", "--all", "--queue", SAMPLE_QUEUE, "-u", settings.redis_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    with api.client() as client:
        ended = _ended(client, job_id, ("finished",))

    assert cli.returncode == 0, cli.stderr
    assert "Requeueing 1 jobs from failed queue" in cli.stdout
    assert (ended["attempts"], ended["result"], ended["error"]) == (2, {"runs": "again"}, None)
    assert "requeued by RQ tools: run again as a retry" in [line["message"] for line in ended["logs"]]


@pytest.mark.parametrize("deployment", [True], ids=["rq"], indirect=True)
@pytest.mark.pairwise("deployment", offset=1)
def test_the_dashboards_requeue_all_runs_a_failed_job_again_to_finished(
    deployment: tuple[Settings, ApiServer], tmp_path: Path
) -> None:
    settings, api = deployment
    job_id = _one_failed_on_rq(settings, api, tmp_path)
    basic = "Basic " + base64.b64encode(f"admin:{ADMIN_KEY}".encode()).decode()
    same_origin = {"Authorization": basic, "Origin": api.url, "Sec-Fetch-Site": "same-origin"}

    with api.client() as client:
        requeue = client.post(f"/rq/requeue/{SAMPLE_QUEUE}", headers=same_origin)
        ended = _ended(client, job_id, ("finished",))

    assert requeue.status_code == 200, requeue.text
    assert (ended["attempts"], ended["result"]) == (2, {"runs": "again"})
    assert "requeued by RQ tools: run again as a retry" in [line["message"] for line in ended["logs"]]
