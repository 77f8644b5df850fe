"""rq-dashboard at /rq: the admin key, JSON jobs, and the guard against its known weaknesses (GET/CSRF, XSS, pickle)."""

from __future__ import annotations

import base64
import pickle
import re
from collections.abc import Iterator

import pytest
import redis
import redis_sentinel_url  # type: ignore[import-untyped]  # what rq-dashboard builds its Redis client with
import rq_dashboard.web
from fastapi.testclient import TestClient
from flask import Flask
from rq import Worker
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from app.dashboard import _dashboard_redis_url
from app.main import create_app
from core.settings import QUEUE_HIGH, QUEUE_NORMAL, Settings
from redis_client import RUN_JOB, fetch_job, get_queue
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.analyses import fail_queued_job
from tests.support.audio import wav_bytes

pytestmark = pytest.mark.one_database

BASIC = {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_KEY}".encode()).decode()}
SAME_ORIGIN = BASIC | {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
# Every rq-dashboard 0.9 route that accepts POST, i.e. every one that changes something.
STATE_CHANGING_ENDPOINTS = {"delete_job_view", "requeue_job_view", "requeue_all", "empty_queue", "compact_queue"}

_unpickled: list[str] = []


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _upload(client: TestClient, priority: str = "normal") -> str:
    """Uploads a WAV with no worker running, so its job stays queued; returns the job id (= analysis id)."""
    answer = client.post(
        "/audio", files={"file": ("tone.wav", wav_bytes(0.5), "audio/wav")}, data={"priority": priority}
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def _mark_unpickled() -> str:
    _unpickled.append("unpickled")
    return "unpickled"


class _Payload:
    """Pickles to a call of `_mark_unpickled`: what an attacker with write access to Redis would plant."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _mark_unpickled, ()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": "wrong"},
    ],
    ids=["no key", "wrong basic", "wrong bearer", "wrong x-api-key"],
)
def test_dashboard_without_the_key_asks_browsers_for_basic_auth(client: TestClient, headers: dict[str, str]) -> None:
    for path in ("/rq/", "/rq/0/data/queues.json", "/rq/static/css/main.css"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"].startswith('Basic realm="audiokit admin"')
        assert answer.headers["X-Frame-Options"] == "DENY"


def test_dashboard_answers_503_when_no_admin_key_is_configured(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(admin_api_key=None))) as client:
        answer = client.get("/rq/", headers=BASIC)
    assert answer.status_code == 503
    assert "ADMIN_API_KEY" in answer.text


@pytest.mark.parametrize(
    "headers",
    [BASIC, {"Authorization": f"Bearer {ADMIN_KEY}"}, {"X-API-Key": ADMIN_KEY}],
    ids=["basic password", "bearer", "x-api-key"],
)
def test_the_admin_key_opens_the_dashboard(client: TestClient, headers: dict[str, str]) -> None:
    answer = client.get("/rq/", headers=headers)
    assert answer.status_code == 200
    assert "<title>RQ dashboard</title>" in answer.text
    assert client.get("/rq/static/js/jquery-3.5.1.min.js", headers=headers).status_code == 200


def test_data_endpoints_list_our_queues_and_read_the_json_job(client: TestClient) -> None:
    job_id = _upload(client)
    _upload(client, priority="high")

    queues = client.get("/rq/0/data/queues.json", headers=BASIC).json()["queues"]
    assert {queue["name"]: queue["count"] for queue in queues} == {QUEUE_HIGH: 1, QUEUE_NORMAL: 1}

    jobs = client.get(f"/rq/0/data/jobs/{QUEUE_NORMAL}/queued/8/asc/1.json", headers=BASIC).json()["jobs"]
    assert [(job["id"], job["description"]) for job in jobs] == [(job_id, f"process_audio_analysis({job_id})")]
    job = client.get(f"/rq/0/data/job/{job_id}.json", headers=BASIC).json()
    assert (job["origin"], job["status"]) == (QUEUE_NORMAL, "queued")
    assert client.get(f"/rq/0/view/job/{job_id}", headers=BASIC).status_code == 200


def test_every_route_that_accepts_post_is_known() -> None:
    flask_app = Flask(__name__)
    flask_app.register_blueprint(rq_dashboard.web.blueprint)
    posting = {rule.endpoint for rule in flask_app.url_map.iter_rules() if "POST" in (rule.methods or ())}
    assert posting == {f"rq_dashboard.{endpoint}" for endpoint in STATE_CHANGING_ENDPOINTS}


@pytest.mark.parametrize(
    "path",
    [
        "/rq/requeue/audio_analysis",
        "/rq/job/{job_id}/requeue",
        "/rq/job/{job_id}/delete",
        "/rq/queue/audio_analysis/failed/empty",
        "/rq/queue/audio_analysis/compact",
    ],
)
def test_state_changing_routes_refuse_get(client: TestClient, redis_conn: redis.Redis, path: str) -> None:
    job = fail_queued_job(_upload(client), redis_conn)

    for method in ("GET", "HEAD"):
        answer = client.request(method, path.format(job_id=job.id), headers=BASIC)
        assert answer.status_code == 405, method
        assert answer.headers["Allow"] == "POST"
    assert job.get_status(refresh=True) == JobStatus.FAILED


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://testserver"},
    ],
    ids=["foreign origin", "null origin", "foreign referer", "sec-fetch-site cross-site", "sibling site"],
)
def test_cross_site_posts_are_refused(client: TestClient, redis_conn: redis.Redis, headers: dict[str, str]) -> None:
    job = fail_queued_job(_upload(client), redis_conn)

    answer = client.post(f"/rq/requeue/{QUEUE_NORMAL}", headers=BASIC | headers)

    assert answer.status_code == 403
    assert job.get_status(refresh=True) == JobStatus.FAILED


def test_a_same_origin_post_requeues_a_failed_json_job(client: TestClient, redis_conn: redis.Redis) -> None:
    job = fail_queued_job(_upload(client), redis_conn)

    answer = client.post(f"/rq/requeue/{QUEUE_NORMAL}", headers=SAME_ORIGIN)

    assert answer.json() == {"status": "OK", "count": 1}
    requeued = fetch_job(job.id, redis_conn)
    assert requeued is not None
    assert requeued.get_status() == JobStatus.QUEUED
    assert (requeued.func_name, requeued.args) == (RUN_JOB, [job.id])


def test_deleting_jobs_is_disabled(client: TestClient, redis_conn: redis.Redis) -> None:
    job_id = _upload(client)

    answer = client.post(f"/rq/job/{job_id}/delete", headers=SAME_ORIGIN)

    assert answer.json() == {"status": "DISABLED"}
    assert fetch_job(job_id, redis_conn) is not None


def test_pages_carry_a_nonce_csp_and_refuse_framing(client: TestClient) -> None:
    answer = client.get("/rq/0/view/queues", headers=BASIC)

    csp = answer.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([\w-]+)'", csp)
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}" type="text/javascript">' in answer.text
    assert "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp.split("style-src")[0]
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert nonce.group(1) not in client.get("/rq/0/view/queues", headers=BASIC).headers["Content-Security-Policy"]


def test_client_side_templates_escape_every_job_field(client: TestClient) -> None:
    job_id = _upload(client)

    for page in (f"/rq/0/view/job/{job_id}", f"/rq/0/view/jobs/{QUEUE_NORMAL}/queued/8/asc/1", "/rq/0/view/workers"):
        html = client.get(page, headers=BASIC).text
        assert not re.search(r"<%=(?!\s*\$\()", html), page  # raw insertions left: only the `$('<div/>').text()` ones
    job_page = client.get(f"/rq/0/view/job/{job_id}", headers=BASIC).text
    assert "<%- d.description %>" in job_page
    assert "<%- d.exc_info %>" in job_page


def test_the_dashboard_never_unpickles_what_it_finds_in_redis(client: TestClient, redis_conn: redis.Redis) -> None:
    job = fail_queued_job(_upload(client), redis_conn)
    worker = Worker([get_queue(QUEUE_NORMAL, redis_conn)], connection=redis_conn, serializer=JSONSerializer)
    worker.register_birth()  # type: ignore[no-untyped-call]
    worker.prepare_execution(job)
    redis_conn.hset(job.key, "meta", pickle.dumps(_Payload()))
    _unpickled.clear()

    client.get(f"/rq/0/data/job/{job.id}.json", headers=BASIC)
    client.get(f"/rq/0/view/job/{job.id}", headers=BASIC)
    workers = client.get("/rq/0/data/workers.json", headers=BASIC)
    client.post(f"/rq/job/{job.id}/requeue", headers=SAME_ORIGIN)

    # As shipped, rq-dashboard also answers 500 here: it reads a busy worker's JSON job with pickle.
    assert workers.status_code == 200
    assert workers.json()["workers"][0]["current_job"]["job_id"] == job.id
    assert _unpickled == []


def test_the_dashboard_connects_with_the_service_password_tls_and_timeouts(make_settings: SettingsFactory) -> None:
    settings = make_settings(redis_url="rediss://:s%40cret@redis.internal:6380/2?socket_timeout=9")

    url = _dashboard_redis_url(settings)
    # rq-dashboard builds its client like this on every request (and passes password=None).
    _, client = redis_sentinel_url.connect(url, client_options={"password": None})

    options = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert (options["password"], options["db"]) == ("s@cret", 2)
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (9.0, 2.0)  # the URL's own wins


def test_compacting_an_empty_queue_answers_ok(client: TestClient, redis_conn: redis.Redis) -> None:
    drained = _upload(client, priority="high")
    get_queue(QUEUE_HIGH, redis_conn).remove(drained)  # the queue is known to RQ, and empty

    for queue in (QUEUE_HIGH, QUEUE_NORMAL):  # QUEUE_NORMAL never had a job
        answer = client.post(f"/rq/queue/{queue}/compact", headers=SAME_ORIGIN)
        assert (answer.status_code, answer.json()) == (200, {"status": "OK", "count": 0})


def test_compacting_drops_ids_of_jobs_that_no_longer_exist(client: TestClient, redis_conn: redis.Redis) -> None:
    kept, gone = _upload(client), _upload(client)
    redis_conn.delete(f"rq:job:{gone}")

    answer = client.post(f"/rq/queue/{QUEUE_NORMAL}/compact", headers=SAME_ORIGIN)

    assert (answer.status_code, answer.json()) == (200, {"status": "OK", "count": 1})
    assert get_queue(QUEUE_NORMAL, redis_conn).job_ids == [kept]


def test_compacting_an_unknown_queue_is_404(client: TestClient) -> None:
    answer = client.post("/rq/queue/no_such_queue/compact", headers=SAME_ORIGIN)
    assert (answer.status_code, answer.json()) == (404, {"status": "ERROR", "detail": "no queue named 'no_such_queue'"})


def test_requeueing_an_unknown_or_unfailed_job_is_a_clear_4xx(client: TestClient) -> None:
    queued = _upload(client)

    unknown = client.post("/rq/job/no-such-job/requeue", headers=SAME_ORIGIN)
    not_failed = client.post(f"/rq/job/{queued}/requeue", headers=SAME_ORIGIN)

    assert (unknown.status_code, unknown.json()["detail"]) == (404, "no job with id 'no-such-job'")
    assert not_failed.status_code == 409
    assert "only failed jobs can be requeued" in not_failed.json()["detail"]
