"""The database layer on the private PostgreSQL: migrations both ways, compare-and-set under concurrency, a job."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import sqlalchemy
from alembic import command
from sqlalchemy import inspect

from core.db import Database, alembic_config, make_engine
from core.models import JobStatus
from jobs.runtime import Runtime
from tests.support.analyses import drain, enqueue_upload, store_upload
from tests.support.audio import wav_bytes
from tests.support.black_hole import BlackHole
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.slow

WRITERS = 8  # concurrent runs of one job (a retry racing an abandoned run, a re-enqueue...)
ROUNDS = 5


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_upgrade_to_head_and_downgrade_to_base_on_postgresql(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("migrations_round_trip")
    try:
        config = alembic_config(url)
        command.upgrade(config, "head")
        at_head = _tables(url)
        command.downgrade(config, "base")
        at_base = _tables(url)
        command.upgrade(config, "head")  # and up again: the downgrade left nothing behind
        again = _tables(url)
    finally:
        postgres_server.drop_database("migrations_round_trip")

    assert {"jobs", "analyses", "alembic_version"} <= at_head
    assert at_base <= {"alembic_version"}
    assert again == at_head


def _race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Runs every call at once, each on its own thread released by one barrier; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = calls[index]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads), "a writer is still blocked"
    return results


def test_concurrent_runs_of_one_job_count_every_attempt_and_write_one_end_on_postgresql(
    make_runtime: Callable[..., Runtime], postgres_url: str
) -> None:
    runtime = make_runtime(database_url=postgres_url)
    lifecycle = runtime.lifecycle
    for _ in range(ROUNDS):
        analysis = store_upload(runtime, wav_bytes(0.1))
        started = _race([partial(lifecycle.begin_attempt, analysis.id)] * WRITERS)
        # Every kind of final write at once: a success, a failure for good, a cancel, more successes.
        success = partial(lifecycle.complete, analysis.id, {"rms_dbfs": -9.0})
        finals: list[Callable[[], bool]] = [
            partial(lifecycle.record_failure, analysis.id, "boom", retry_in_s=None),
            partial(lifecycle.mark_canceled, analysis.id),
        ]
        finals += [success] * (WRITERS - len(finals))
        won = _race(finals)
        row = lifecycle.require(analysis.id)
        messages = [line["message"] for line in row.logs]

        assert all(run is not None for run in started)
        assert row.attempts == WRITERS  # `attempts + 1` is atomic: no increment lost
        assert messages.count("attempt started") == WRITERS  # nor a log line (read-modify-write under a row lock)
        assert won.count(True) == 1, won
        assert row.status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED)
        assert [line["seq"] for line in row.logs] == list(range(1, len(row.logs) + 1))


def test_an_uploaded_analysis_runs_to_the_end_on_postgresql(
    make_runtime: Callable[..., Runtime], postgres_url: str
) -> None:
    runtime = make_runtime(database_url=postgres_url)
    analysis_id = enqueue_upload(runtime, wav_bytes(0.5))
    drain(runtime.redis)

    row = runtime.lifecycle.require(analysis_id)
    assert row.status == JobStatus.FINISHED, row.error
    assert row.result is not None
    assert row.result["sample_rate"] > 0


def test_a_database_that_accepts_but_never_answers_fails_the_ping_instead_of_hanging(black_hole: BlackHole) -> None:
    database = Database(f"postgresql+psycopg://audiokit@127.0.0.1:{black_hole.port}/audiokit")
    outcome: list[BaseException | None] = []

    def ping() -> None:
        try:
            database.ping()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=ping, daemon=True)
    thread.start()
    thread.join(timeout=60)  # generous: the point is that it ends, not how fast
    database.dispose()

    assert outcome, "the ping is still waiting for an answer (no connect timeout)"
    assert isinstance(outcome[0], sqlalchemy.exc.OperationalError)
