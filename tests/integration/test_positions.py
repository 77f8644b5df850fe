"""Simultaneous uploads are told their own places in line, in both modes, as RQ's `Job.get_position` tells them."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.conftest import SettingsFactory
from tests.support.audio import wav_bytes
from tests.support.fake_services import FakeServices
from tests.support.processes import ApiServer, wait_for, wait_until_ended

pytestmark = pytest.mark.slow

UPLOADS = 30


def _upload(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/audio", files={"file": ("a.wav", wav_bytes(0.3))})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("mode", ["rq", "background"])
@pytest.mark.pairwise("mode")
def test_simultaneous_uploads_are_told_distinct_places_in_line(
    mode: str, make_settings: SettingsFactory, api_server: Callable[[Settings], ApiServer], fake: FakeServices
) -> None:
    # Nothing drains the line while the uploads are answered: no worker in RQ mode; in-process, a first
    # job holds the only slot (the fake analysis server keeps it waiting).
    settings = make_settings(use_rq_queue=mode == "rq", analysis_server_url=fake.analyze_url, background_concurrency=1)
    api = api_server(settings)
    fake.script.hold.clear()
    limits = httpx.Limits(max_connections=UPLOADS, max_keepalive_connections=UPLOADS)
    with api.client(limits=limits) as client:
        if mode == "background":
            busy = _upload(client)["id"]
            wait_for(lambda: busy in fake.runner_pids(), 30, "a first job to take the only slot")
        with ThreadPoolExecutor(max_workers=UPLOADS) as pool:
            answers = list(pool.map(lambda _: _upload(client), range(UPLOADS)))
        views = [client.get(f"/jobs/{answer['id']}").json() for answer in answers]
        fake.script.hold.set()
        if mode == "background":
            for answer in answers:
                wait_until_ended(client, answer["id"])
    told = [answer["position"] for answer in answers]
    assert sorted(told) == list(range(UPLOADS)), told
    assert [view["position"] for view in views] == told  # nothing moved since: each is still where it was told
