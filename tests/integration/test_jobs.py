"""`/jobs` for tasks that are not analyses, against the real API and real workers, in both modes.

The API runs the service's app plus endpoints that start the sample tasks (`tests/support/sample_app.py`)
through `QueuedTasks`; with `USE_RQ_QUEUE=true` real workers (start_worker.sh) run them, with `false`
the API process does. One deployment per mode serves the module's tests (each looks at its own jobs);
the job list, which counts everything, gets one of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.conftest import ADMIN_KEY, DATABASES, SettingsFactory
from tests.support.processes import ApiServer, ManagedProcess, kill_all, start_workers, wait_for
from tests.support.sample_app import SAMPLE_APP
from tests.support.sample_tasks import SAMPLE_QUEUE, SAMPLE_TASK_MODULES
from tests.support.sse import parse

# The database is a module-scoped parameter, so that each mode's shared deployment starts once (RQ on
# SQLite, in-process on PostgreSQL: `pairwise`), in one test process (`xdist_group`).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_backend", DATABASES, scope="module"),
    pytest.mark.xdist_group("jobs"),
]

ADMIN = {"X-API-Key": ADMIN_KEY}
ENDED = ("finished", "failed", "canceled")


@dataclass(frozen=True)
class Deployment:
    settings: Settings
    api: ApiServer

    @property
    def mode(self) -> str:
        return "rq" if self.settings.use_rq_queue else "background"

    def client(self) -> httpx.Client:
        return self.api.client()


def _deploy(settings: Settings, logs: Path) -> tuple[Deployment, list[ManagedProcess]]:
    """The API with the sample endpoints, and (RQ mode) workers serving the sample queue too."""
    api = ApiServer(settings, logs / "api.log", factory=SAMPLE_APP)
    started: list[ManagedProcess] = [api]
    try:
        if settings.use_rq_queue:
            started.append(
                start_workers(settings, logs / "worker.log", "-q", f"high_priority,audio_analysis,{SAMPLE_QUEUE}")
            )
    except BaseException:
        kill_all(started)
        raise
    return Deployment(settings, api), started


@pytest.fixture(scope="module", params=[True, False], ids=["rq", "in-process"])
def deployment(
    request: pytest.FixtureRequest, make_module_settings: SettingsFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """One deployment per mode for the module's tests."""
    settings = make_module_settings(use_rq_queue=request.param, task_modules=SAMPLE_TASK_MODULES)
    deployed, started = _deploy(settings, tmp_path_factory.mktemp("jobs-deployment"))
    yield deployed
    kill_all(started)


@pytest.fixture(params=[True, False], ids=["rq", "in-process"])
def own_deployment(
    request: pytest.FixtureRequest, make_settings: SettingsFactory, tmp_path: Path
) -> Iterator[Deployment]:
    """A deployment for one test, which no other test's jobs reach."""
    settings = make_settings(use_rq_queue=request.param, task_modules=SAMPLE_TASK_MODULES)
    deployed, started = _deploy(settings, tmp_path)
    yield deployed
    kill_all(started)


def _start(client: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    answer = client.post(f"/samples/{path}", params=params)
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _ended(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return body if body["status"] in ENDED else None

    return wait_for(ended, timeout_s, f"job {job_id} to end")


@pytest.mark.parametrize(
    ("path", "params", "task", "result"),
    [
        ("add", {"a": 2, "b": 3}, "samples.add", {"sum": 5}),
        ("greet", {"name": "ada"}, "samples.greet", {"greeting": "hello ada?"}),
    ],
    ids=["def", "async-def"],
)
@pytest.mark.pairwise("deployment")
def test_a_task_runs_to_finished_with_its_result(
    deployment: Deployment, path: str, params: dict[str, Any], task: str, result: dict[str, Any]
) -> None:
    with deployment.client() as client:
        handle = _start(client, path, **params)
        job_id = handle["id"]
        body = _ended(client, job_id)
        answer = client.get(f"/jobs/{job_id}/result")

    assert handle["task"] == task
    assert handle["status_url"] == f"{deployment.api.url}/jobs/{job_id}"
    assert (body["status"], body["error"]) == ("finished", None)
    assert (body["task"], body["mode"], body["attempts"], body["progress"]) == (task, deployment.mode, 1, 100)
    assert body["result"] == result | {"job": job_id}  # the task knew which job it ran for
    assert answer.status_code == 200
    assert answer.json() == {"id": job_id, "status": "finished", "result": body["result"]}


@pytest.mark.pairwise("deployment")
def test_job_events_follow_a_task_that_is_not_an_analysis_to_its_end(deployment: Deployment, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with deployment.client() as client:
        job_id = _start(client, "gated", gate=str(gate), steps=3)["id"]
        with client.stream("GET", f"/jobs/{job_id}/events", timeout=60) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = parse(response.iter_lines())
            first = next(events)
            gate.touch()  # the task runs only now: everything it does happens while the stream is open
            rest = list(events)  # to the end: the server closes the stream after the terminal status

    assert first.event == "status"
    assert (first.data["id"], first.data["task"]) == (job_id, "samples.gated")
    assert first.data["status"] in ("pending", "queued", "started")
    statuses = [event.data["status"] for event in rest if event.event == "status"]
    assert statuses[-1] == "finished"
    assert not set(statuses[:-1]) & set(ENDED)
    assert rest[-1].event == "status"
    assert (rest[-1].data["result"], rest[-1].data["progress"]) == ({"steps": 3}, 100)
    messages = [event.data["message"] for event in rest if event.event == "log"]
    steps = [message for message in messages if message.startswith("step ")]
    assert steps == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    progress = [event.data["progress"] for event in rest if event.event == "progress"]
    assert progress == sorted(progress)
    assert progress[-1] == 100


@pytest.mark.pairwise("deployment")
def test_a_failed_task_is_retried_as_itself_by_the_retry_endpoint(deployment: Deployment, tmp_path: Path) -> None:
    with deployment.client() as client:
        job_id = _start(client, "flaky", marker=str(tmp_path / "ran-once"))["id"]
        first = _ended(client, job_id)
        refused = client.post(f"/jobs/{job_id}/retry")
        retried = client.post(f"/jobs/{job_id}/retry", headers=ADMIN)
        second = _ended(client, job_id)
        again = client.post(f"/jobs/{job_id}/retry", headers=ADMIN)

    assert (first["status"], first["attempts"]) == ("failed", 1)
    assert "first run fails" in first["error"]
    assert refused.status_code == 401
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] not in ENDED
    assert (second["task"], second["status"], second["attempts"]) == ("samples.flaky", "finished", 2)
    assert (second["result"], second["error"]) == ({"runs": "again"}, None)
    assert again.status_code == 409  # a finished job is not run again
    assert again.json()["detail"]


def _list(client: httpx.Client, **params: Any) -> dict[str, Any]:
    answer = client.get("/jobs", params=params, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _ids(client: httpx.Client, **params: Any) -> list[str]:
    return [item["id"] for item in _list(client, **params)["items"]]


def _pages(client: httpx.Client, limit: int, **params: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        body = _list(client, limit=limit, **params | ({"cursor": cursor} if cursor else {}))
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


@pytest.mark.pairwise("own_deployment", offset=1)
def test_the_admin_job_list_filters_by_task_status_and_queue_and_pages(own_deployment: Deployment) -> None:
    deployment = own_deployment
    with deployment.client() as client:
        adds = [_start(client, "add", a=n, b=n)["id"] for n in range(3)]
        greets = [_start(client, "greet", name=f"n{n}")["id"] for n in range(2)]
        failed = _start(client, "fail", reason="no such order")["id"]
        submitted = [*adds, *greets, failed]
        for job_id in submitted:
            _ended(client, job_id)

        refused = [client.get("/jobs"), client.get("/jobs", headers={"X-API-Key": "wrong"})]
        everything = _list(client)
        by_task = _ids(client, task="samples.add")
        by_status = _list(client, status="failed")
        by_queue = {queue: _ids(client, queue=queue) for queue in (SAMPLE_QUEUE, "audio_analysis", "high_priority")}
        combined = [_ids(client, task="samples.add", status=status) for status in ("finished", "failed")]
        pages = _pages(client, limit=2)
        filtered_pages = _pages(client, limit=3, queue=SAMPLE_QUEUE)
        unknown_task = _ids(client, task="samples.nothing")
        bad = [
            client.get("/jobs", params={"cursor": "not-a-cursor"}, headers=ADMIN),
            client.get("/jobs", params={"status": "exploded"}, headers=ADMIN),
            client.get("/jobs", params={"limit": 0}, headers=ADMIN),
        ]

    assert [answer.status_code for answer in refused] == [401, 401]
    assert all(answer.json()["detail"] for answer in refused)

    newest_first = submitted[::-1]
    assert [item["id"] for item in everything["items"]] == newest_first
    assert everything["next_cursor"] is None
    summary = {item["id"]: (item["task"], item["status"], item["mode"]) for item in everything["items"]}
    assert summary == {
        **dict.fromkeys(adds, ("samples.add", "finished", deployment.mode)),
        **dict.fromkeys(greets, ("samples.greet", "finished", deployment.mode)),
        failed: ("samples.fail", "failed", deployment.mode),
    }

    assert by_task == adds[::-1]
    assert [item["id"] for item in by_status["items"]] == [failed]
    assert "no such order" in by_status["items"][0]["error"]
    assert by_queue == {SAMPLE_QUEUE: [failed, *adds[::-1]], "audio_analysis": greets[::-1], "high_priority": []}
    assert combined == [adds[::-1], []]
    assert unknown_task == []

    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:6]]
    assert filtered_pages == [[failed, *adds[::-1]][:3], [failed, *adds[::-1]][3:]]

    assert [answer.status_code for answer in bad] == [422, 422, 422]
    assert all(answer.json()["detail"] for answer in bad)
