"""Migration 0003 moves what runs a job from `analyses` to `jobs`, and 0002's schema comes back on downgrade."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from core.db import alembic_config
from core.settings import get_settings

AUDIO_TASK = "tasks.audio_analysis.process_audio_analysis"
STATUSES = ["pending", "queued", "scheduled", "started", "finished", "failed", "canceled"]
CALLBACK_STATES: list[str | None] = [None, "pending", "delivered", "undeliverable"]
# What stays in `analyses` after 0003; everything else of 0002's row moves to `jobs`.
DOMAIN_COLUMNS = ["id", "filename", "size_bytes", "content_type", "audio_format", "sha256", "storage_key"]
JSON_COLUMNS = {"logs", "result"}


@pytest.fixture
def migration_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The settings a migration reads: a retry policy of its own, so the test sees where it came from."""
    monkeypatch.setenv("RQ_JOB_TIMEOUT", "7m")
    monkeypatch.setenv("RQ_RETRY_MAX", "2")
    monkeypatch.setenv("RQ_RETRY_INTERVALS", "4,9")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _row(index: int, status: str, callback_status: str | None) -> dict[str, Any]:
    ended = status in {"finished", "failed", "canceled"}
    return {
        "id": f"job{index:02d}",
        "status": status,
        "filename": f"take {index}.wav",
        "size_bytes": 1000 + index,
        "content_type": "audio/wav" if index % 2 else None,
        "audio_format": "wav",
        "sha256": f"{index:064x}",
        "storage_key": f"job{index:02d}.wav",
        "priority": "high" if index % 3 == 0 else "normal",
        "queue": "high_priority" if index % 3 == 0 else "audio_analysis",
        "mode": "background" if index % 2 else "rq",
        "callback_url": "https://receiver.example/hook" if callback_status else None,
        "scheduled_at": "2026-01-01 00:10:00.000000" if status == "scheduled" else None,
        "attempts": index % 4,
        "progress": 100 if status == "finished" else index,
        "logs": json.dumps([{"seq": 1, "at": "2026-01-01T00:00:00+00:00", "message": f"line {index}"}]),
        "result": json.dumps({"duration_s": index + 0.5, "peaks": [index, -index]}) if status == "finished" else None,
        "error": f"CorruptAudio: broken {index}" if status == "failed" else None,
        "cancel_requested": status == "canceled",
        "idempotency_key": f"key-{index}" if index % 2 else None,
        "request_hash": f"{index:064x}" if index % 2 else None,
        "created_at": f"2026-01-01 00:00:{index:02d}.000000",
        "updated_at": f"2026-01-01 00:01:{index:02d}.000000",
        "started_at": "2026-01-01 00:02:00.000000" if status not in {"pending", "queued"} else None,
        "attempt_started_at": "2026-01-01 00:03:00.000000" if status not in {"pending", "queued"} else None,
        "finished_at": "2026-01-01 00:04:00.000000" if ended else None,
        "callback_sent_at": "2026-01-01 00:05:00.000000" if callback_status == "delivered" else None,
        "callback_status": callback_status,
        "callback_attempts": 2 if callback_status else 0,
        "callback_error": "receiver answered 500" if callback_status == "undeliverable" else None,
        "callback_attempted_at": "2026-01-01 00:06:00.000000" if callback_status else None,
        "callback_checked_at": "2026-01-01 00:07:00.000000" if callback_status == "pending" else None,
    }


def _rows_of_0002() -> list[dict[str, Any]]:
    """Every status, each with every callback state (a row of 0002's schema: one analysis, one run)."""
    rows: list[dict[str, Any]] = []
    for status in STATUSES:
        for callback_status in CALLBACK_STATES:
            rows.append(_row(len(rows), status, callback_status))
    return rows


def _select(connection: sa.Connection, table: str) -> dict[str, dict[str, Any]]:
    # Plain SQL: rows as stored (times as text), with no model's types in between. `table` is one of ours.
    found = connection.execute(sa.text(f"SELECT * FROM {table} ORDER BY id")).mappings().all()  # noqa: S608
    return {row["id"]: dict(row) for row in found}


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row as stored, JSON decoded and booleans as 0/1, so rows written and read back compare."""
    out = dict(row)
    for name in JSON_COLUMNS & out.keys():
        if isinstance(out[name], str):
            out[name] = json.loads(out[name])
    if "cancel_requested" in out:
        out["cancel_requested"] = int(out["cancel_requested"])
    return out


@pytest.fixture
def database_at_0002(tmp_path: Path) -> tuple[str, list[dict[str, Any]]]:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0002")
    rows = _rows_of_0002()
    insert = sa.table("analyses", *(sa.column(name) for name in rows[0])).insert()
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(insert, rows)
    engine.dispose()
    return url, rows


@pytest.mark.usefixtures("migration_settings")
def test_rows_of_0002_become_jobs_and_analyses_with_the_same_values(
    database_at_0002: tuple[str, list[dict[str, Any]]],
) -> None:
    url, rows = database_at_0002

    command.upgrade(alembic_config(url), "0003")

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        jobs = _select(connection, "jobs")
        analyses = _select(connection, "analyses")
    engine.dispose()
    assert len(rows) == len(STATUSES) * len(CALLBACK_STATES)
    assert set(jobs) == set(analyses) == {row["id"] for row in rows}
    for row in rows:
        job = _comparable(jobs[row["id"]])
        moved = {name: value for name, value in _comparable(row).items() if name not in DOMAIN_COLUMNS}
        assert {name: job[name] for name in moved} == moved
        assert job["task"] == AUDIO_TASK
        assert json.loads(job["args"]) == [row["storage_key"]]
        assert json.loads(job["kwargs"]) == {}
        assert (job["timeout_s"], job["retries"], json.loads(job["retry_intervals"])) == (420, 2, [4, 9])
        assert analyses[row["id"]] == {name: row[name] for name in DOMAIN_COLUMNS}


def test_downgrade_to_0002_gives_the_rows_back(database_at_0002: tuple[str, list[dict[str, Any]]]) -> None:
    url, rows = database_at_0002
    command.upgrade(alembic_config(url), "0003")

    command.downgrade(alembic_config(url), "0002")

    engine = sa.create_engine(url)
    with engine.connect() as connection:
        analyses = _select(connection, "analyses")
        tables = set(sa.inspect(connection).get_table_names())
    engine.dispose()
    assert "jobs" not in tables
    assert {job_id: _comparable(row) for job_id, row in analyses.items()} == {
        row["id"]: _comparable(row) for row in rows
    }
