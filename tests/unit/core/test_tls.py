"""Outgoing requests share one TLS context: no job pays for loading the CA bundle again."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from core.tls import tls_context
from jobs.runtime import Runtime
from jobs.webhook import deliver
from tasks.analyzers.http import HttpAnalyzer
from tests.support.analyses import store_upload
from tests.support.audio import wav_bytes
from tests.support.fake_services import FakeServices


@pytest.fixture
def bundle_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every load of CA certificates (what building a TLS context costs) during the test, once the
    process's context is built (as a worker builds it before it forks)."""
    tls_context()
    loads: list[str] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(str(args or kwargs))
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    return loads


def test_analyses_through_the_analysis_server_load_no_certificates(
    fake: FakeServices, tmp_path: Path, bundle_loads: list[str]
) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(wav_bytes(0.2))
    analyzer = HttpAnalyzer(fake.analyze_url, 10.0)

    for _ in range(3):
        analyzer.analyze(audio, lambda percent, message: None)

    assert bundle_loads == []


def test_callback_deliveries_load_no_certificates(
    make_runtime: Callable[..., Runtime], fake: FakeServices, bundle_loads: list[str]
) -> None:
    runtime = make_runtime()
    for _ in range(3):
        job = store_upload(runtime, wav_bytes(0.2), callback_url=fake.callback_url)
        runtime.lifecycle.begin_attempt(job.id)
        runtime.lifecycle.complete(job.id, {"duration_s": 0.2})
        assert deliver(runtime.lifecycle.require(job.id), runtime.settings).delivered

    assert bundle_loads == []
