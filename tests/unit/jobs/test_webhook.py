"""One callback attempt: signed, sent to the checked address, and never an exception."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from core.models import Job, JobStatus
from core.settings import Settings
from jobs.runtime import Runtime
from jobs.webhook import deliver
from tests.conftest import SIGNING_SECRET, SettingsFactory
from tests.support.analyses import store_upload
from tests.support.audio import wav_bytes
from tests.support.black_hole import BlackHole
from tests.support.fake_services import FakeServices


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


def _finished(runtime: Runtime, callback_url: str) -> Job:
    analysis = store_upload(runtime, wav_bytes(0.2), callback_url=callback_url)
    runtime.lifecycle.begin_attempt(analysis.id)
    runtime.lifecycle.complete(analysis.id, {"duration_s": 0.2})
    return runtime.lifecycle.require(analysis.id)


def _recording(status: int = 204, **headers: str) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers=headers)

    return httpx.MockTransport(handle), seen


def test_a_callback_is_signed_so_that_standardwebhooks_verifies_it(runtime: Runtime, fake: FakeServices) -> None:
    analysis = _finished(runtime, fake.callback_url)

    assert deliver(analysis, runtime.settings).delivered

    ((headers, body),) = fake.callback_requests
    verified = Webhook(SIGNING_SECRET).verify(body, headers)
    assert verified == {
        "id": analysis.id,
        "task": "tasks.audio_analysis.process_audio_analysis",
        "status": JobStatus.FINISHED.value,
        "result": {"duration_s": 0.2},
        "error": None,
        "status_url": f"{runtime.settings.base_url}/jobs/{analysis.id}",
    }
    assert headers["webhook-id"] == headers["idempotency-key"] == analysis.id
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(SIGNING_SECRET).verify(body.replace(b"finished", b"failed"), headers)


def test_the_request_goes_to_the_checked_address_with_the_original_host_and_sni(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime(callback_allowed_networks="")
    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: public)
    transport, seen = _recording()

    assert deliver(_finished(runtime, "https://hooks.example:8443/in?x=1"), runtime.settings, transport).delivered

    (request,) = seen
    assert str(request.url) == "https://93.184.215.14:8443/in?x=1"
    assert request.headers["host"] == "hooks.example:8443"
    assert request.extensions["sni_hostname"] == "hooks.example"


def test_a_redirect_is_not_followed_and_not_a_delivery(runtime: Runtime) -> None:
    transport, seen = _recording(302, location="http://169.254.169.254/latest/meta-data")

    outcome = deliver(_finished(runtime, "http://127.0.0.1:9/hook"), runtime.settings, transport)

    assert (outcome.delivered, outcome.error, len(seen)) == (False, "the receiver answered 302", 1)


def test_a_black_hole_is_a_failed_attempt_after_the_timeout(
    make_runtime: Callable[..., Runtime], black_hole: BlackHole
) -> None:
    runtime = make_runtime(callback_timeout_s=0.3)

    outcome = deliver(_finished(runtime, black_hole.url), runtime.settings)

    assert (outcome.delivered, outcome.permanent) == (False, False)
    assert "Timeout" in (outcome.error or "")
    assert black_hole.accepted == 1


@pytest.mark.parametrize("url", ["http://localhost:{port}/hook", "http://127.0.0.1:{port}/hook"])
def test_with_default_settings_loopback_targets_are_refused_and_never_contacted(
    make_runtime: Callable[..., Runtime], black_hole: BlackHole, url: str
) -> None:
    runtime = make_runtime(callback_allowed_networks="")

    outcome = deliver(_finished(runtime, url.format(port=black_hole.port)), runtime.settings)

    assert (outcome.delivered, outcome.permanent) == (False, True)
    assert "non-public address" in (outcome.error or "")
    assert black_hole.accepted == 0


@pytest.mark.parametrize(
    "stored", ["http://127.0.0.1:6395/\r\nSET x 1", "http://127.0.0.1:<img src=x>/", "gopher://127.0.0.1/"]
)
def test_a_stored_url_that_cannot_be_sent_is_a_permanent_failure_not_an_exception(
    runtime: Runtime, stored: str
) -> None:
    outcome = deliver(_finished(runtime, stored), runtime.settings)
    assert (outcome.delivered, outcome.permanent) == (False, True)


def test_nothing_is_sent_unsigned(make_settings: SettingsFactory, runtime: Runtime, fake: FakeServices) -> None:
    unsigned: Settings = make_settings(callback_signing_secret="")

    outcome = deliver(_finished(runtime, fake.callback_url), unsigned)

    assert not outcome.delivered
    assert "CALLBACK_SIGNING_SECRET" in (outcome.error or "")
    assert fake.callback_requests == []


def test_any_transport_error_is_a_failed_attempt(runtime: Runtime) -> None:
    def explode(request: httpx.Request) -> Any:
        raise httpx.UnsupportedProtocol("nope")

    outcome = deliver(_finished(runtime, "http://127.0.0.1:9/"), runtime.settings, httpx.MockTransport(explode))

    assert (outcome.delivered, outcome.error) == (False, "UnsupportedProtocol: nope")
