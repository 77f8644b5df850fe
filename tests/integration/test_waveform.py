"""The waveform image: a second task moved with the drop-in (`QueuedTasks`), over real processes, in both modes."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import cast

import httpx
import numpy as np
import pytest

from core.settings import Settings
from tasks.waveform import HEIGHT, TASK_NAME, WIDTH
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.audio import encode, tone, wav_bytes
from tests.support.processes import ApiServer, ManagedProcess, wait_for, wait_until_ended

pytestmark = pytest.mark.slow


def decode_png(data: bytes) -> np.ndarray:
    """The RGB pixels of an 8-bit truecolour PNG without filters (what `tasks.waveform` writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, dict[bytes, bytes]()
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        tag = data[position + 4 : position + 8]
        chunks[tag] = chunks.get(tag, b"") + data[position + 8 : position + 8 + length]
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, 1 + width * 3)
    assert not rows[:, 0].any(), "filter type 0 on every row"
    return cast(np.ndarray, rows[:, 1:].reshape(height, width, 3))


def band_heights(pixels: np.ndarray) -> np.ndarray:
    """Per column, how many pixels the wave covers (its colour is the blue of `tasks.waveform.WAVE`)."""
    return np.asarray(np.count_nonzero((pixels[:, :, 2] > 200) & (pixels[:, :, 0] < 100), axis=0))


@pytest.mark.parametrize("mode", ["rq", "background"])
@pytest.mark.pairwise("mode")
def test_the_waveform_is_drawn_once_by_its_own_job_and_shows_the_signal(
    mode: str,
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
) -> None:
    settings = make_settings(use_rq_queue=mode == "rq")
    api = api_server(settings)
    if mode == "rq":
        workers(settings)
    # Loud for the first half, silent for the second: the picture must show it.
    samples = np.concatenate([tone(220.0, -1.0, 1.0, 44100), np.zeros(44100)])
    loud = encode(samples, 44100, "WAV", "PCM_16")
    with api.client() as client:
        upload = client.post("/audio", files={"file": ("half.wav", loud)})
        assert upload.status_code == 202, upload.text
        analysis_id = upload.json()["id"]
        early = client.get(f"/audio/{analysis_id}/waveform.png")
        # Before the analysis has finished the waveform is not started (409), unless it finished already.
        assert early.status_code in (409, 202, 200), early.text
        wait_until_ended(client, analysis_id)

        first = client.get(f"/audio/{analysis_id}/waveform.png")
        assert first.status_code in (200, 202), first.text
        answers = [first]

        def drawn() -> httpx.Response | None:
            answer = client.get(f"/audio/{analysis_id}/waveform.png")
            answers.append(answer)
            return answer if answer.status_code == 200 else None

        image = wait_for(drawn, 60, "the waveform image")
        assert image.headers["content-type"] == "image/png"
        job_ids = {answer.json()["id"] for answer in answers if answer.status_code == 202}
        assert len(job_ids) <= 1, "every request named the same job"

        jobs = client.get("/jobs", params={"task": TASK_NAME}, headers={"X-API-Key": ADMIN_KEY}).json()["items"]
        assert len(jobs) == 1, jobs
        job = client.get(f"/jobs/{jobs[0]['id']}").json()
        assert (job["task"], job["status"], job["attempts"], job["mode"]) == (TASK_NAME, "finished", 1, mode)
        assert (job["result"]["width"], job["result"]["height"]) == (WIDTH, HEIGHT)
        assert abs(job["result"]["duration_s"] - 2.0) < 0.05

    pixels = decode_png(image.content)
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    heights = band_heights(pixels)
    # A -1 dBFS sine (amplitude 0.89) spans ~89% of the height; silence only the centre pixel or so.
    assert np.median(heights[: WIDTH // 2 - 2]) > 0.8 * HEIGHT, heights
    assert np.max(heights[WIDTH // 2 + 2 :]) <= 2, heights


@pytest.mark.one_database  # the refusals are the API's, not the database's
def test_the_waveform_of_an_unknown_or_unfinished_analysis_is_refused(
    make_settings: SettingsFactory, api_server: Callable[[Settings], ApiServer]
) -> None:
    api = api_server(make_settings(use_rq_queue=True))  # no workers: the analysis stays queued
    with api.client() as client:
        assert client.get("/audio/0123456789abcdef0123456789abcdef/waveform.png").status_code == 404
        upload = client.post("/audio", files={"file": ("a.wav", wav_bytes(0.5))}).json()
        refused = client.get(f"/audio/{upload['id']}/waveform.png")
        assert refused.status_code == 409
        assert "queued" in refused.json()["detail"]
