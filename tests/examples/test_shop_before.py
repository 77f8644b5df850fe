"""The example shop before the move: plain `BackgroundTasks`, whose failures are simply lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from examples.shop import outside
from examples.shop.before.app import app


@pytest.fixture
def shop_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOP_DIR", str(tmp_path / "shop"))
    monkeypatch.setenv("SHOP_WORK_S", "0")
    return tmp_path / "shop"


def test_the_plain_shop_runs_each_task_after_answering(shop_dir: Path) -> None:
    with TestClient(app) as client:
        assert client.post("/orders", json={"id": 3, "email": "a@example.com", "total_cents": 250}).status_code == 202
        assert client.post("/orders/3/shipment", json={"items": ["mug"]}).status_code == 202

    assert outside.read_journal(outside.RECEIPTS) == ["order=3 total=2.50"]
    assert outside.read_journal(outside.OUTBOX) == ["order=3 to=a@example.com subject=Order 3 confirmed"]
    assert outside.read_journal(outside.PARCELS) == ["order=3 items=mug gift_wrap=no"]
    assert outside.read_journal(outside.PICKUPS) == ["order=3"]


def test_the_plain_shop_loses_a_booking_when_the_courier_is_busy(shop_dir: Path) -> None:
    outside.make_courier_busy(1)
    with TestClient(app) as client, pytest.raises(outside.CourierBusy):
        # Starlette runs the task after the response and only logs its error: nobody retries it.
        client.post("/orders/4/shipment", json={"items": ["mug"]})

    assert outside.read_journal(outside.PARCELS) == ["order=4 items=mug gift_wrap=no"]
    assert outside.read_journal(outside.PICKUPS) == []
