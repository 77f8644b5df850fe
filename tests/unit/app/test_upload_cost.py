"""What one upload costs the database: one write transaction, and no other statement than its two INSERTs.

Workers and the API share SQLite's one write lock; every extra transaction or read an upload makes is a
wait for it under load (and a round trip on PostgreSQL).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.main import create_app
from jobs.inprocess import THREAD_NAME_PREFIX
from tests.conftest import SettingsFactory
from tests.support.audio import wav_bytes


@dataclass
class Traffic:
    """The transactions and statements the API's engine saw outside in-process job threads."""

    transactions: int = 0
    statements: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.transactions = 0
        self.statements.clear()


def _from_request() -> bool:
    return not threading.current_thread().name.startswith(THREAD_NAME_PREFIX)


@pytest.fixture(params=[True, False], ids=["rq", "in-process"])
def traffic_and_client(
    request: pytest.FixtureRequest, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Traffic, TestClient]]:
    # No periodic task runs in the in-process API during the test: not the kit's (reconciler, retention),
    # nor one that another test of this process declared (e.g. a tick every second); an in-process job runs
    # on its own threads.
    monkeypatch.setattr(importlib.import_module("jobs.web.lifespan"), "declared", dict)
    settings = make_settings(use_rq_queue=request.param)
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.services.database.engine  # type: ignore[attr-defined]
        traffic = Traffic()

        def on_begin(connection: Any) -> None:
            if _from_request():
                traffic.transactions += 1

        def on_statement(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
            if _from_request():
                traffic.statements.append(" ".join(statement.split()[:3]))

        event.listen(engine, "begin", on_begin)
        event.listen(engine, "before_cursor_execute", on_statement)
        try:
            yield traffic, client
        finally:
            event.remove(engine, "begin", on_begin)
            event.remove(engine, "before_cursor_execute", on_statement)


def test_an_upload_is_one_transaction_of_two_inserts(traffic_and_client: tuple[Traffic, TestClient]) -> None:
    traffic, client = traffic_and_client
    data = wav_bytes(0.2)
    assert client.post("/audio", files={"file": ("warm.wav", data, "audio/wav")}).status_code == 202
    traffic.clear()

    response = client.post("/audio", files={"file": ("tone.wav", data, "audio/wav")})

    assert response.status_code == 202, response.text
    assert traffic.transactions == 1, traffic.statements
    assert sorted(traffic.statements) == ["INSERT INTO analyses", "INSERT INTO jobs"]
    body = response.json()
    assert body["status"] == "queued"
    row = client.get(f"/audio/{body['id']}").json()
    assert row["filename"] == "tone.wav"
    assert row["status"] in ("queued", "started", "finished")
