"""The job function on RQ: idempotent, permanent errors fail once, transient ones retry, cancel wins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rq.job import JobStatus as RQJobStatus

from core.errors import AnalysisServerUnavailable
from core.models import JobStatus
from jobs.execute import run_job
from jobs.runtime import Runtime
from redis_client import KitJob, get_queue
from tests.support.analyses import drain, enqueue_upload
from tests.support.audio import corrupt_audio_bytes, wav_bytes


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(rq_retry_max=2, rq_retry_intervals="0")


def test_a_wav_is_analysed_and_its_result_recorded_once(runtime: Runtime) -> None:
    analysis_id = enqueue_upload(runtime, wav_bytes(1.0, freq_hz=1000.0))
    drain(runtime.redis)

    analysis = runtime.lifecycle.require(analysis_id)
    assert (analysis.status, analysis.attempts, analysis.progress) == (JobStatus.FINISHED, 1, 100)
    assert analysis.result is not None
    assert abs(analysis.result["dominant_frequency_hz"] - 1000) < 2
    assert analysis.started_at is not None
    assert analysis.finished_at is not None
    job = KitJob.fetch(analysis_id, connection=runtime.redis)
    assert job.get_status() == RQJobStatus.FINISHED
    assert job.return_value() == analysis.result
    assert job.get_meta()["progress"] == 100  # mirrored for rq-dashboard


def test_running_a_finished_job_again_changes_nothing(runtime: Runtime) -> None:
    analysis_id = enqueue_upload(runtime, wav_bytes(0.5))
    drain(runtime.redis)
    before = runtime.lifecycle.require(analysis_id)

    assert run_job(analysis_id) == before.result

    after = runtime.lifecycle.require(analysis_id)
    assert (after.attempts, after.finished_at, after.result) == (before.attempts, before.finished_at, before.result)


def test_corrupt_audio_fails_once_without_retries(runtime: Runtime) -> None:
    analysis_id = enqueue_upload(runtime, corrupt_audio_bytes(), extension="flac")
    drain(runtime.redis)

    analysis = runtime.lifecycle.require(analysis_id)
    assert (analysis.status, analysis.attempts) == (JobStatus.FAILED, 1)
    assert analysis.error is not None
    assert analysis.error.startswith("could not decode audio")
    assert analysis_id in get_queue("audio_analysis", runtime.redis).failed_job_registry.get_job_ids()


def test_a_transient_error_is_retried_and_retries_share_one_counter(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def flaky(self: Any, path: Path, progress: Any) -> dict[str, Any]:
        calls.append(path)
        raise AnalysisServerUnavailable("analysis server answered 503")

    monkeypatch.setattr("tasks.analyzers.local.LocalAnalyzer.analyze", flaky)
    analysis_id = enqueue_upload(runtime, wav_bytes(0.5))
    drain(runtime.redis)

    analysis = runtime.lifecycle.require(analysis_id)
    assert len(calls) == 3  # 1 + RQ_RETRY_MAX
    assert (analysis.status, analysis.attempts) == (JobStatus.FAILED, 3)
    assert analysis.error == "analysis server answered 503"
    assert any("retrying in 0s" in line["message"] for line in analysis.logs)


def test_a_transient_error_then_success_finishes(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.analyzers.local import LocalAnalyzer

    real = LocalAnalyzer.analyze
    failures = iter([AnalysisServerUnavailable("timeout")])

    def once_flaky(self: LocalAnalyzer, path: Path, progress: Any) -> dict[str, Any]:
        error = next(failures, None)
        if error is not None:
            raise error
        return real(self, path, progress)

    monkeypatch.setattr(LocalAnalyzer, "analyze", once_flaky)
    analysis_id = enqueue_upload(runtime, wav_bytes(0.5))
    drain(runtime.redis)

    analysis = runtime.lifecycle.require(analysis_id)
    assert (analysis.status, analysis.attempts, analysis.error) == (JobStatus.FINISHED, 2, None)


def test_a_job_canceled_after_a_worker_took_it_never_runs(runtime: Runtime) -> None:
    analysis_id = enqueue_upload(runtime, wav_bytes(0.5))
    runtime.lifecycle.request_cancel(analysis_id)  # the race: RQ's cancel came too late for this worker
    drain(runtime.redis)

    analysis = runtime.lifecycle.require(analysis_id)
    assert (analysis.status, analysis.attempts, analysis.result) == (JobStatus.CANCELED, 0, None)


def test_a_cancel_requested_mid_run_stops_the_job_without_retry(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.analyzers.local import LocalAnalyzer

    real = LocalAnalyzer.analyze

    def cancel_midway(self: LocalAnalyzer, path: Path, progress: Any) -> dict[str, Any]:
        runtime.lifecycle.request_cancel(path.stem)
        return real(self, path, progress)  # its next progress report raises JobCanceled

    monkeypatch.setattr(LocalAnalyzer, "analyze", cancel_midway)
    analysis_id = enqueue_upload(runtime, wav_bytes(2.0))
    drain(runtime.redis)

    analysis = runtime.lifecycle.require(analysis_id)
    assert (analysis.status, analysis.attempts, analysis.result) == (JobStatus.CANCELED, 1, None)
