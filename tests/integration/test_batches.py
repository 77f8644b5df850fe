"""`POST /audio/batch`, `GET /batches/{id}` and its events, against the real API and real workers, in both modes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.settings import Settings
from tests.conftest import SettingsFactory
from tests.support.audio import wav_bytes
from tests.support.processes import ApiServer, ManagedProcess
from tests.support.sse import parse

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["rq", "background"])
@pytest.mark.pairwise("mode", offset=1)
def test_a_batch_with_a_bad_file_analyses_the_others_and_reports_its_progress_to_the_end(
    mode: str,
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
) -> None:
    settings = make_settings(use_rq_queue=mode == "rq", batch_max_files=3, sse_poll_interval_s=0.2)
    api = api_server(settings)
    if mode == "rq":
        workers(settings)
    files = [
        ("files", ("low.wav", wav_bytes(0.5, freq_hz=300.0))),
        ("files", ("notes.txt", b"not audio at all, just text" * 10)),
        ("files", ("high.wav", wav_bytes(0.5, freq_hz=1000.0))),
    ]
    with api.client() as client:
        answer = client.post("/audio/batch", files=files, data={"priority": "high"})
        assert answer.status_code == 202, answer.text
        accepted = answer.json()
        with client.stream("GET", f"/batches/{accepted['id']}/events", timeout=60) as stream:
            assert stream.status_code == 200
            events = list(parse(stream.iter_lines()))  # to the end: the stream closes once every job ended
        batch = client.get(accepted["status_url"]).json()
        analyses = [client.get(item["status_url"]).json() for item in accepted["items"] if item["id"]]
        unknown = client.get("/batches/no-such-batch")
        too_many = client.post("/audio/batch", files=[*files, files[0]])
        no_files = client.post("/audio/batch", data={"priority": "high"}, files=[("other", ("a.wav", b"x"))])
        bad_option = client.post("/audio/batch", files=files[:1], data={"priority": "urgent"})

    assert (accepted["accepted"], accepted["rejected"]) == (2, 1)
    assert [item["name"] for item in accepted["items"]] == ["low.wav", "notes.txt", "high.wav"]
    rejected = accepted["items"][1]
    assert (rejected["id"], rejected["status"], rejected["status_code"]) == (None, "rejected", 415)
    assert rejected["error"]
    assert accepted["status_url"].endswith(f"/batches/{accepted['id']}")

    assert events
    assert all(event.event == "progress" for event in events)
    percents = [event.data["percent"] for event in events]
    assert percents == sorted(percents)
    assert events[-1].data["done"] is True
    assert events[-1].data == batch

    assert (batch["total"], batch["percent"], batch["done"]) == (3, 100, True)
    assert batch["counts"]["finished"] == 2
    assert batch["counts"]["rejected"] == 1
    assert sum(batch["counts"].values()) == 3
    frequencies = [item["result"]["dominant_frequency_hz"] for item in batch["items"] if item["status"] == "finished"]
    assert [round(frequency, -1) for frequency in frequencies] == [300, 1000]
    assert [analysis["status"] for analysis in analyses] == ["finished", "finished"]
    assert {analysis["priority"] for analysis in analyses} == {"high"}

    assert unknown.status_code == 404
    assert too_many.status_code == 413
    assert no_files.status_code == 422
    assert bad_option.status_code == 422
    assert all(answer.json()["detail"] for answer in (unknown, too_many, no_files, bad_option))
