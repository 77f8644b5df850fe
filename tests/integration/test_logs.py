"""What operators read: an expected failure is one line, never a traceback or an error-level line."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.settings import Settings
from tests.conftest import SettingsFactory
from tests.support.audio import corrupt_audio_bytes
from tests.support.processes import ApiServer, ManagedProcess, wait_for, wait_until_ended

pytestmark = [pytest.mark.slow, pytest.mark.one_database]  # what the processes log is checked, not the database


def test_a_corrupt_upload_fails_as_one_log_line_in_the_worker_and_no_error_in_the_api(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: Callable[..., ManagedProcess],
) -> None:
    settings = make_settings()
    api = api_server(settings)
    worker = workers(settings)
    with api.client() as client:
        upload = client.post("/audio", files={"file": ("broken.flac", corrupt_audio_bytes())})
        assert upload.status_code == 202, upload.text
        analysis_id = upload.json()["id"]
        failed = wait_until_ended(client, analysis_id)
        result = client.get(f"/jobs/{analysis_id}/result")
    assert failed["status"] == "failed"
    # The contract keeps 500 for a failed job's result (SPEC), with the job's error as the detail.
    assert (result.status_code, result.json()["detail"]) == (500, failed["error"])

    def logged() -> str | None:
        text = worker.output()
        return text if f"job {analysis_id}" in text else None

    worker_log = wait_for(logged, 30, "the worker to log the failure")
    assert "Traceback" not in worker_log, worker_log
    assert worker_log.count(f"job {analysis_id} failed: {failed['error']}\n") == 1, worker_log

    api_log = api.output()
    assert "Traceback" not in api_log, api_log
    about_the_result = [text for text in api_log.splitlines() if f"/jobs/{analysis_id}/result" in text]
    # Only uvicorn's access line, at INFO, which states the status it answered.
    assert len(about_the_result) == 1, api_log
    assert about_the_result[0].startswith("INFO:"), about_the_result
    assert not [text for text in api_log.splitlines() if text.startswith(("ERROR", "CRITICAL"))], api_log
