"""The worker's log: an expected failure is one line; a bug keeps its traceback."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import fakeredis
import pytest

from core.errors import AnalysisServerUnavailable, CorruptAudio
from redis_client import KitJob
from workers.worker import KitWorker


def _exc_info(error: BaseException) -> tuple[type[BaseException], BaseException, TracebackType | None]:
    try:
        raise error
    except BaseException as raised:
        return type(raised), raised, raised.__traceback__


@pytest.fixture
def handled() -> list[BaseException]:
    """What the worker's exception handlers (e.g. Sentry's) were given."""
    return []


@pytest.fixture
def worker(handled: list[BaseException]) -> KitWorker:
    def record(job: Any, kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        handled.append(value)

    return KitWorker(["audio_analysis"], connection=fakeredis.FakeRedis(), exception_handlers=[record])


@pytest.mark.parametrize(
    "error",
    [CorruptAudio("could not decode audio: flac decoder lost sync"), AnalysisServerUnavailable("answered 503")],
)
def test_an_expected_failure_is_logged_as_one_line_without_a_traceback(
    worker: KitWorker, handled: list[BaseException], caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    job = KitJob.create(
        "tasks.audio_analysis.process_audio_analysis", args=["abc"], id="abc", connection=worker.connection
    )
    with caplog.at_level(logging.DEBUG, logger="rq.worker"):
        worker.handle_exception(job, *_exc_info(error))

    lines = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [(record.levelname, record.getMessage()) for record in lines] == [
        ("WARNING", f"Worker {worker.name}: job abc failed: {error}")
    ]
    assert "Traceback" not in caplog.text
    assert handled == [error]  # exception handlers still see it


def test_an_unexpected_exception_keeps_rqs_error_line_and_traceback(
    worker: KitWorker, caplog: pytest.LogCaptureFixture
) -> None:
    job = KitJob.create(
        "tasks.audio_analysis.process_audio_analysis", args=["abc"], id="abc", connection=worker.connection
    )
    with caplog.at_level(logging.DEBUG, logger="rq.worker"):
        worker.handle_exception(job, *_exc_info(ZeroDivisionError("division by zero")))

    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "Traceback (most recent call last)" in errors[0].getMessage()
    assert "ZeroDivisionError: division by zero" in errors[0].getMessage()
