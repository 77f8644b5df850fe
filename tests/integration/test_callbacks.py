"""Callbacks over real processes: a receiver that never answers slows no analysis, and ends `undeliverable`.

Issue 8 item 2: 24 uploads with a callback_url pointing at a black hole used to hold every analysis
worker for 10 s each and make every reconciler pass re-send them all, one after another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from core.settings import Settings
from jobs.dispatch import Dispatcher
from jobs.reconcile import Reconciler
from jobs.runtime import build_runtime
from tasks.audio_analysis import TASK_NAME
from tests.conftest import ADMIN_KEY, SIGNING_SECRET, SettingsFactory
from tests.support.audio import wav_bytes
from tests.support.black_hole import BlackHole
from tests.support.fake_services import FakeServices
from tests.support.processes import ApiServer, ManagedProcess, wait_for

pytestmark = pytest.mark.slow

WITH_CALLBACK = 8
WITHOUT_CALLBACK = 2


def _upload(client: httpx.Client, index: int, **fields: str) -> str:
    answer = client.post(
        "/audio", files={"file": (f"t{index}.wav", wav_bytes(0.2, freq_hz=200.0 + index))}, data=fields
    )
    assert answer.status_code == 202, answer.text
    analysis_id: str = answer.json()["id"]
    return analysis_id


def _all(client: httpx.Client, ids: list[str], ok: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]] | None:
    bodies = [client.get(f"/jobs/{analysis_id}").json() for analysis_id in ids]
    return bodies if all(ok(body) for body in bodies) else None


def _undeliverable_count(client: httpx.Client) -> float:
    text = client.get("/metrics", headers={"X-API-Key": ADMIN_KEY}).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "audiokit_callbacks_total" and sample.labels == {"outcome": "undeliverable"}:
                return float(sample.value)
    return 0.0


@pytest.mark.timeout(300)
def test_a_black_hole_receiver_holds_no_analysis_and_its_callbacks_end_undeliverable(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
    black_hole: BlackHole,
) -> None:
    # A long attempt timeout, so that "no attempt has timed out yet" is a fact while the analyses run.
    settings = make_settings(callback_timeout_s=90, callback_max_attempts=2, callback_backoff_s=1)
    api = api_server(settings)
    workers(settings)  # analysis queues
    workers(settings, "-q", "callbacks", "-n", "1")  # callback deliveries, as in the Procfile

    with api.client() as client:
        hooked = [_upload(client, n, callback_url=black_hole.url) for n in range(WITH_CALLBACK)]
        plain = [_upload(client, WITH_CALLBACK + n) for n in range(WITHOUT_CALLBACK)]

        # Every analysis finishes while the black hole still holds the first callback attempt open.
        wait_for(lambda: _all(client, hooked + plain, lambda b: b["status"] == "finished"), 120, "the analyses")
        black_hole.wait_accepted(1)
        assert black_hole.closed_by_peer == 0  # no callback attempt has ended, none has timed out
        assert black_hole.held >= 1

        # A reconciler pass over them sends nothing and enqueues nothing (each has its job already).
        runtime = build_runtime(settings.model_copy(update={"reconcile_grace_s": 0}))
        dispatcher = Dispatcher(runtime.settings, runtime.redis, None, runtime.lifecycle)
        accepted = black_hole.accepted
        report = Reconciler(runtime.settings, runtime.lifecycle, runtime.redis, dispatcher).run_once()
        assert (report.callbacks_enqueued, report.errors, report.skipped) == ([], [], None)
        assert black_hole.accepted == accepted

        # The receiver goes away: attempts now fail at once, and after the cap each callback is undeliverable.
        black_hole.release()
        ended = wait_for(
            lambda: _all(client, hooked, lambda b: b["callback"]["status"] == "undeliverable"), 120, "the cap"
        )
        assert {(body["callback"]["attempts"], body["status"]) for body in ended} == {(2, "finished")}
        assert all(client.get(f"/audio/{i}").json()["callback"] is None for i in plain)
        assert _undeliverable_count(client) == WITH_CALLBACK
        assert black_hole.accepted == 2 * WITH_CALLBACK


@pytest.mark.timeout(180)
def test_callbacks_are_delivered_once_and_verify_with_standardwebhooks(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
    fake: FakeServices,
) -> None:
    settings = make_settings()
    api = api_server(settings)
    workers(settings, "-q", "high_priority,audio_analysis,callbacks")

    with api.client() as client:
        ids = [_upload(client, n, callback_url=fake.callback_url) for n in range(3)]
        delivered = wait_for(
            lambda: _all(client, ids, lambda b: (b["callback"] or {}).get("status") == "delivered"), 90, "callbacks"
        )

    assert {body["callback"]["attempts"] for body in delivered} == {1}
    assert sorted(fake.callbacks.elements()) == sorted(ids)  # once each
    for headers, body in fake.callback_requests:
        sent = Webhook(SIGNING_SECRET).verify(body, headers)
        assert sent["id"] in ids
        assert (sent["task"], sent["status"], sent["error"]) == (TASK_NAME, "finished", None)
        assert sent["status_url"] == f"{settings.base_url}/jobs/{sent['id']}"
        assert sent["result"] == next(b["result"] for b in delivered if b["id"] == sent["id"])
