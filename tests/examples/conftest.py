"""Fixtures for the example shop: its API under uvicorn, stopped after the test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core.settings import Settings
from tests.examples.shop import ShopApi
from tests.support.processes import ManagedProcess


@pytest.fixture
def shop_api(tmp_path: Path, launched: list[ManagedProcess]) -> Callable[[Settings, dict[str, str]], ShopApi]:
    """Starts `uvicorn examples.shop.after.app:app` with `settings` and the shop's own variables."""

    def start(settings: Settings, env: dict[str, str]) -> ShopApi:
        server = ShopApi(settings, tmp_path / f"shop-api-{len(launched)}.log", env)
        launched.append(server)  # stopped with the test's other processes
        return server

    return start
