"""GET /metrics: admin key, Prometheus text, route-template labels, one registry per app, Redis down."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from fastapi import BackgroundTasks
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.testclient import TestClient
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

import app.metrics as app_metrics
from app.main import create_app
from core.metrics import RedisJobMetrics
from core.settings import QUEUE_HIGH, QUEUE_NORMAL, QUEUES_BY_PRIORITY, Settings
from devserver.ports import free_port
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.audio import wav_bytes
from tests.support.processes import wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
REQUESTS = "audiokit_http_request_duration_seconds"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def scrape(client: TestClient) -> dict[str, Metric]:
    response = client.get("/metrics", headers=ADMIN)
    assert response.status_code == 200, response.text
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def sample(families: dict[str, Metric], family: str, name: str, **labels: str) -> float | None:
    """The value of the one sample `name` with exactly these labels (None when there is none)."""
    for found in families[family].samples:
        if found.name == name and found.labels == labels:
            return found.value
    return None


def requests_count(families: dict[str, Metric], method: str, route: str, status: str) -> float | None:
    return sample(families, REQUESTS, f"{REQUESTS}_count", method=method, route=route, status=status)


def test_metrics_need_the_admin_key(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    response = client.get("/metrics", headers=ADMIN)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4


def test_metrics_are_listed_in_the_openapi_schema_under_operations(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert operation["tags"] == ["operations"]


def test_queue_depth_follows_the_rq_registries(client: TestClient) -> None:
    for priority in ("normal", "normal", "high"):
        answer = client.post(
            "/audio", files={"file": ("a.wav", wav_bytes(0.2), "audio/wav")}, data={"priority": priority}
        )
        assert answer.status_code == 202, answer.text

    families = scrape(client)
    status = client.get("/queue/status", headers=ADMIN).json()

    assert sample(families, "audiokit_redis_up", "audiokit_redis_up") == 1
    assert sample(families, "audiokit_queue_jobs", "audiokit_queue_jobs", queue=QUEUE_NORMAL, registry="queued") == 2
    assert sample(families, "audiokit_queue_jobs", "audiokit_queue_jobs", queue=QUEUE_HIGH, registry="queued") == 1
    for queue in QUEUES_BY_PRIORITY:
        for registry, count in status["queues"][queue].items():
            assert (
                sample(families, "audiokit_queue_jobs", "audiokit_queue_jobs", queue=queue, registry=registry) == count
            )
        assert sample(families, "audiokit_workers", "audiokit_workers", queue=queue) == 0  # no worker runs here
    assert sample(families, "audiokit_workers_alive", "audiokit_workers_alive") == 0


def test_job_counters_and_histograms_come_from_redis(client: TestClient, redis_conn: redis.Redis) -> None:
    recorded_elsewhere = RedisJobMetrics(redis_conn)  # as a worker process would
    recorded_elsewhere.started(QUEUE_NORMAL, 1, 0.2)
    recorded_elsewhere.finished(QUEUE_NORMAL, 3.0)
    recorded_elsewhere.started(QUEUE_HIGH, 1, 0.01)
    recorded_elsewhere.retried(QUEUE_HIGH)

    families = scrape(client)

    def jobs(event: str, queue: str) -> float | None:
        return sample(families, f"audiokit_jobs_{event}", f"audiokit_jobs_{event}_total", queue=queue)

    assert (jobs("started", QUEUE_NORMAL), jobs("finished", QUEUE_NORMAL), jobs("failed", QUEUE_NORMAL)) == (1, 1, 0)
    assert (jobs("started", QUEUE_HIGH), jobs("retried", QUEUE_HIGH), jobs("canceled", QUEUE_HIGH)) == (1, 1, 0)
    duration = "audiokit_job_duration_seconds"
    assert sample(families, duration, f"{duration}_count", queue=QUEUE_NORMAL) == 1
    assert sample(families, duration, f"{duration}_sum", queue=QUEUE_NORMAL) == 3.0
    assert sample(families, duration, f"{duration}_bucket", queue=QUEUE_NORMAL, le="2.5") == 0
    assert sample(families, duration, f"{duration}_bucket", queue=QUEUE_NORMAL, le="5.0") == 1
    assert sample(families, duration, f"{duration}_bucket", queue=QUEUE_NORMAL, le="+Inf") == 1
    assert sample(families, duration, f"{duration}_count", queue=QUEUE_HIGH) == 0
    wait = "audiokit_upload_to_start_seconds"
    assert sample(families, wait, f"{wait}_count", queue=QUEUE_HIGH) == 1
    assert sample(families, wait, f"{wait}_bucket", queue=QUEUE_HIGH, le="0.01") == 1


def test_in_process_jobs_of_the_api_are_counted(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(use_rq_queue=False))) as client:
        analysis_id = client.post("/audio", files={"file": ("a.wav", wav_bytes(0.3), "audio/wav")}).json()["id"]
        wait_for(lambda: client.get(f"/audio/{analysis_id}").json()["status"] == "finished", 20, "the analysis")
        families = scrape(client)

    assert sample(families, "audiokit_jobs_started", "audiokit_jobs_started_total", queue=QUEUE_NORMAL) == 1
    assert sample(families, "audiokit_jobs_finished", "audiokit_jobs_finished_total", queue=QUEUE_NORMAL) == 1
    duration, wait = "audiokit_job_duration_seconds", "audiokit_upload_to_start_seconds"
    assert sample(families, duration, f"{duration}_count", queue=QUEUE_NORMAL) == 1
    assert sample(families, wait, f"{wait}_count", queue=QUEUE_NORMAL) == 1
    assert sample(families, "audiokit_inprocess_jobs", "audiokit_inprocess_jobs", state="running") == 0


def test_request_latency_is_labelled_by_route_template_not_raw_path(client: TestClient) -> None:
    unknown_id = uuid.uuid4().hex
    assert client.get(f"/audio/{unknown_id}").status_code == 404
    assert client.get(f"/audio/{unknown_id}").status_code == 404
    assert client.get(f"/no/such/page/{unknown_id}").status_code == 404
    assert client.request("BREW", "/metrics").status_code == 405

    response = client.get("/metrics", headers=ADMIN)
    families = {family.name: family for family in text_string_to_metric_families(response.text)}

    assert unknown_id not in response.text
    assert requests_count(families, "GET", "/audio/{analysis_id}", "404") == 2
    assert requests_count(families, "GET", app_metrics.UNMATCHED_ROUTE, "404") == 1
    assert requests_count(families, "OTHER", "/metrics", "405") == 1
    # The first scrape answered before the second one collected: it is counted once, with its 200.
    assert requests_count(families, "GET", "/metrics", "200") is None
    assert requests_count(scrape(client), "GET", "/metrics", "200") == 1


def test_mounted_apps_and_plain_starlette_routes_get_their_template_too(settings: Settings) -> None:
    app = create_app(settings)

    async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("mounted")(scope, receive, send)

    app.mount("/test-mount", mounted)  # like the dashboard at /rq: a foreign ASGI app
    with TestClient(app) as client:
        assert client.get("/test-mount/a/b").text == "mounted"
        assert client.get("/test-mount/c").text == "mounted"
        assert client.get("/openapi.json").status_code == 200
        response = client.get("/metrics", headers=ADMIN)

    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert requests_count(families, "GET", "/test-mount/{path}", "200") == 2
    assert requests_count(families, "GET", "/openapi.json", "200") == 1
    assert "/test-mount/a/b" not in response.text


def test_latency_stops_at_the_response_headers(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeClock:
        now = 1000.0

        def perf_counter(self) -> float:
            return self.now

    clock = FakeClock()
    monkeypatch.setattr(app_metrics, "time", clock)
    app = create_app(settings)

    def after_the_response() -> None:
        clock.now += 1000.0  # an in-process job: not the request's latency

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"first"
        clock.now += 100.0  # a long-lived stream, like SSE: not latency either
        yield b"last"

    @app.get("/test/streams/{name}")
    def stream(name: str, tasks: BackgroundTasks) -> StreamingResponse:
        tasks.add_task(after_the_response)
        return StreamingResponse(slow_body(), media_type="text/plain")

    with TestClient(app) as client:
        assert client.get("/test/streams/a").text == "firstlast"
        families = scrape(client)

    assert clock.now == 2100.0
    assert requests_count(families, "GET", "/test/streams/{name}", "200") == 1
    assert sample(families, REQUESTS, f"{REQUESTS}_sum", method="GET", route="/test/streams/{name}", status="200") == 0


def test_an_unhandled_error_is_counted_as_500(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/test/broken")
    def broken() -> None:
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/test/broken").status_code == 500
        families = scrape(client)

    assert requests_count(families, "GET", "/test/broken", "500") == 1


def test_several_apps_in_one_process_keep_their_own_request_metrics(settings: Settings) -> None:
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        first.get("/audio/x")
        first.get("/audio/y")
        second.get("/audio/z")
        first_families, second_families = scrape(first), scrape(second)

    assert requests_count(first_families, "GET", "/audio/{analysis_id}", "404") == 2
    assert requests_count(second_families, "GET", "/audio/{analysis_id}", "404") == 1


def test_without_redis_metrics_still_answer_with_what_they_can(make_settings: SettingsFactory) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_connect_timeout_s=0.2)
    with TestClient(create_app(settings)) as client:
        client.get("/audio/x")
        families = scrape(client)

    assert sample(families, "audiokit_redis_up", "audiokit_redis_up") == 0
    assert requests_count(families, "GET", "/audio/{analysis_id}", "404") == 1
    assert "audiokit_queue_jobs" not in families
    assert "audiokit_jobs_started" not in families
