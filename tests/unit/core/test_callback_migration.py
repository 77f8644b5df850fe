"""Migration 0002 adds the callback state and fills it in for rows that ended before it."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command

from core.db import alembic_config


def test_rows_that_ended_before_the_migration_get_their_callback_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0001")
    engine = sa.create_engine(url)
    columns = (
        "id, status, filename, size_bytes, audio_format, sha256, storage_key, priority, queue, mode, attempts,"
        " progress, logs, cancel_requested, created_at, updated_at, callback_url, callback_sent_at"
    )
    rows = [
        ("sent", "finished", "'http://h/'", "'2026-01-01 00:00:00'"),
        ("owed", "failed", "'http://h/'", "NULL"),
        ("running", "started", "'http://h/'", "NULL"),
        ("none", "finished", "NULL", "NULL"),
    ]
    with engine.begin() as connection:
        for name, status, callback_url, sent_at in rows:
            connection.execute(
                sa.text(
                    f"INSERT INTO analyses ({columns}) VALUES ('{name}', '{status}', 'f', 1, 'wav', 'x', 'k',"
                    f" 'normal', 'audio_analysis', 'rq', 1, 0, '[]', 0, '2026-01-01', '2026-01-01',"
                    f" {callback_url}, {sent_at})"
                )
            )

    command.upgrade(alembic_config(url), "head")

    with engine.connect() as connection:
        found = dict(connection.execute(sa.text("SELECT id, callback_status FROM analyses")).all())
        attempts = set(connection.execute(sa.text("SELECT callback_attempts FROM analyses")).scalars())
    engine.dispose()
    assert found == {"sent": "delivered", "owed": "pending", "running": None, "none": None}
    assert attempts == {0}
    command.downgrade(alembic_config(url), "0001")
