"""Fixtures for the example shop: its API under uvicorn, stopped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.examples.shop import ShopApi


@pytest.fixture
def shop_api(tmp_path: Path) -> Iterator[Callable[[Settings, dict[str, str]], ShopApi]]:
    """Starts `uvicorn examples.shop.after.app:app` with `settings` and the shop's own variables."""
    started: list[ShopApi] = []

    def start(settings: Settings, env: dict[str, str]) -> ShopApi:
        server = ShopApi(settings, tmp_path / f"shop-api-{len(started)}.log", env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
