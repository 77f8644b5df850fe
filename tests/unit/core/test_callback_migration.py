"""Migration 0002 adds the callback state and fills it in for rows that ended before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command

from core.db import alembic_config


def test_rows_that_ended_before_the_migration_get_their_callback_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0001")
    engine = sa.create_engine(url)
    insert = sa.text(
        "INSERT INTO analyses (id, status, filename, size_bytes, audio_format, sha256, storage_key, priority,"
        " queue, mode, attempts, progress, logs, cancel_requested, created_at, updated_at, callback_url,"
        " callback_sent_at) VALUES (:id, :status, 'f', 1, 'wav', 'x', 'k', 'normal', 'audio_analysis', 'rq',"
        " 1, 0, '[]', 0, '2026-01-01', '2026-01-01', :callback_url, :sent_at)"
    )
    rows: list[dict[str, Any]] = [
        {"id": "sent", "status": "finished", "callback_url": "http://h/", "sent_at": "2026-01-01 00:00:00"},
        {"id": "owed", "status": "failed", "callback_url": "http://h/", "sent_at": None},
        {"id": "running", "status": "started", "callback_url": "http://h/", "sent_at": None},
        {"id": "none", "status": "finished", "callback_url": None, "sent_at": None},
    ]
    with engine.begin() as connection:
        connection.execute(insert, rows)

    command.upgrade(alembic_config(url), "0002")

    with engine.connect() as connection:
        found: dict[str, str | None] = dict(
            connection.execute(sa.text("SELECT id, callback_status FROM analyses")).all()
        )
        attempts = set(connection.execute(sa.text("SELECT callback_attempts FROM analyses")).scalars())
    engine.dispose()
    assert found == {"sent": "delivered", "owed": "pending", "running": None, "none": None}
    assert attempts == {0}
    command.downgrade(alembic_config(url), "0001")
