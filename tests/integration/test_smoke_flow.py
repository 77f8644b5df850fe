"""An upload travels the whole way: API → Redis → worker → database, over real processes."""

from __future__ import annotations

from collections.abc import Callable

from core.settings import Settings
from tests.conftest import SettingsFactory
from tests.support.audio import wav_bytes
from tests.support.processes import ApiServer, ManagedProcess, wait_for


def test_wav_upload_finishes_on_a_real_worker(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
) -> None:
    settings = make_settings(use_rq_queue=True)
    api = api_server(settings)
    workers(settings)
    with api.client() as client:
        answer = client.post("/audio", files={"file": ("tone.wav", wav_bytes(2.0), "audio/wav")})
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert body["mode"] == "rq"
        final = wait_for(
            lambda: (r := client.get(f"/audio/{body['id']}").json())["status"] in ("finished", "failed") and r,
            30,
            "the analysis to end",
        )
    assert final["status"] == "finished", final
    assert abs(final["result"]["dominant_frequency_hz"] - 440) < 2
