"""The whole way, over real processes: HTTP upload → queue or in-process → analysis → polling and SSE.

Both modes answer the same API the same way; only where the work runs differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from core.settings import Settings
from tests.conftest import SettingsFactory
from tests.support.audio import corrupt_audio_bytes, flac_bytes, mp3_bytes, wav_bytes
from tests.support.processes import ApiServer, ManagedProcess, wait_until_ended
from tests.support.sse import Event, read_events

pytestmark = pytest.mark.slow

TERMINAL = ("finished", "failed", "canceled")


def _serve(
    mode: str,
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
    **overrides: Any,
) -> ApiServer:
    settings = make_settings(use_rq_queue=mode == "rq", **overrides)
    api = api_server(settings)
    if mode == "rq":
        workers(settings)
    return api


@pytest.mark.parametrize("mode", ["rq", "background"])
@pytest.mark.pairwise("mode", offset=1)
def test_wav_flac_and_mp3_finish_with_correct_results_and_corrupt_audio_fails_once(
    mode: str,
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
) -> None:
    api = _serve(mode, make_settings, api_server, workers)
    uploads = {
        "tone.wav": (wav_bytes(2.0, freq_hz=440.0), 440.0),
        "tone.flac": (flac_bytes(2.0, freq_hz=1000.0), 1000.0),
        "tone.mp3": (mp3_bytes(2.0, freq_hz=300.0), 300.0),
    }
    with api.client() as client:
        ids = {}
        for name, (data, _) in uploads.items():
            answer = client.post("/audio", files={"file": (name, data)})
            assert answer.status_code == 202, answer.text
            assert answer.json()["mode"] == mode
            ids[name] = answer.json()["id"]
        corrupt = client.post("/audio", files={"file": ("broken.flac", corrupt_audio_bytes())})
        assert corrupt.status_code == 202, corrupt.text

        for name, (_, frequency) in uploads.items():
            analysis = wait_until_ended(client, ids[name])
            assert (analysis["status"], analysis["attempts"], analysis["error"]) == ("finished", 1, None), analysis
            result = analysis["result"]
            assert abs(result["dominant_frequency_hz"] - frequency) < 2, (name, result)
            assert abs(result["duration_s"] - 2.0) < 0.1
            assert analysis["progress"] == 100

        failed = wait_until_ended(client, corrupt.json()["id"])
    assert (failed["status"], failed["attempts"], failed["result"]) == ("failed", 1, None)
    assert failed["error"].startswith("could not decode audio"), failed["error"]


def _check_ordered(events: list[Event]) -> None:
    assert events[0].event == "status"
    assert events[-1].event == "status"
    assert events[-1].data["status"] == "finished"
    statuses = [event.data["status"] for event in events if event.event == "status"]
    assert statuses[-1] == "finished"
    assert statuses.count("finished") == 1
    progress = [event.data["progress"] for event in events if event.event == "progress"]
    assert progress == sorted(progress), progress
    assert progress[-1] == 100
    log_seqs = [event.data["seq"] for event in events if event.event == "log"]
    assert log_seqs == sorted(log_seqs)
    assert len(log_seqs) == len(set(log_seqs))
    assert events[-1].data["result"]["dominant_frequency_hz"] > 0


@pytest.mark.parametrize("mode", ["rq", "background"])
@pytest.mark.pairwise("mode")
def test_the_event_stream_delivers_ordered_events_to_the_end(
    mode: str,
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
) -> None:
    # Every report written: a 30 s file's analysis may take less than JOB_PROGRESS_INTERVAL_MS on a fast machine.
    api = _serve(mode, make_settings, api_server, workers, job_progress_interval_ms=0)
    with api.client() as client:
        answer = client.post("/audio", files={"file": ("long.wav", wav_bytes(30.0))})
        assert answer.status_code == 202
        events = read_events(client, answer.json()["events_url"])
        _check_ordered(events)
        assert any(event.event == "progress" and 0 < event.data["progress"] < 100 for event in events)

        # A client that connects after the end gets the final state, and the stream ends.
        late = read_events(client, answer.json()["events_url"])
    assert [event.event for event in late] == ["status"]
    assert late[0].data["status"] == "finished"
    assert late[0].data["result"] == events[-1].data["result"]


@pytest.mark.one_database  # a missing row is a missing row on either database
def test_an_event_stream_of_an_unknown_analysis_is_404(
    make_settings: SettingsFactory, api_server: Callable[[Settings], ApiServer]
) -> None:
    api = api_server(make_settings())
    with api.client() as client:
        response = client.get("/audio/nope/events")
    assert response.status_code == 404
