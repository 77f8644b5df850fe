"""In-process mode (`USE_RQ_QUEUE=false`): callbacks are delivered by the API, never in an analysis slot."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from app.main import create_app
from tests.conftest import SIGNING_SECRET, SettingsFactory
from tests.support.audio import wav_bytes
from tests.support.black_hole import BlackHole
from tests.support.fake_services import FakeServices
from tests.support.processes import wait_for


def _upload(client: TestClient, index: int, **fields: str) -> str:
    answer = client.post(
        "/audio", files={"file": (f"t{index}.wav", wav_bytes(0.2, freq_hz=300.0 + index))}, data=fields
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["mode"] == "background"
    analysis_id: str = answer.json()["id"]
    return analysis_id


def _all(client: TestClient, ids: list[str], ok: Any) -> bool:
    return all(ok(client.get(f"/audio/{analysis_id}").json()) for analysis_id in ids)


@pytest.mark.timeout(180)
def test_a_black_hole_takes_no_analysis_slot_and_its_callbacks_end_undeliverable(
    make_settings: SettingsFactory, black_hole: BlackHole
) -> None:
    settings = make_settings(
        use_rq_queue=False,
        background_concurrency=2,
        callback_timeout_s=90,
        callback_max_attempts=2,
        callback_backoff_s=1,
        callback_concurrency=6,
    )
    with TestClient(create_app(settings)) as client:
        hooked = [_upload(client, n, callback_url=black_hole.url) for n in range(6)]
        plain = [_upload(client, 10 + n) for n in range(4)]

        wait_for(lambda: _all(client, hooked + plain, lambda b: b["status"] == "finished"), 90, "the analyses")
        black_hole.wait_accepted(len(hooked))  # every delivery is waiting on the black hole at once...
        assert black_hole.closed_by_peer == 0  # ...and none has given up yet

        black_hole.release()
        wait_for(lambda: _all(client, hooked, lambda b: b["callback"]["status"] == "undeliverable"), 60, "the cap")
        assert {client.get(f"/audio/{i}").json()["callback"]["attempts"] for i in hooked} == {2}


def test_in_process_callbacks_are_delivered_once_and_signed(make_settings: SettingsFactory, fake: FakeServices) -> None:
    with TestClient(create_app(make_settings(use_rq_queue=False))) as client:
        ids = [_upload(client, n, callback_url=fake.callback_url) for n in range(3)]
        wait_for(
            lambda: _all(client, ids, lambda b: (b["callback"] or {}).get("status") == "delivered"), 60, "delivery"
        )

    assert sorted(fake.callbacks.elements()) == sorted(ids)
    for headers, body in fake.callback_requests:
        Webhook(SIGNING_SECRET).verify(body, headers)
