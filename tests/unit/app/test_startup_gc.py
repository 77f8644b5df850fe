"""The API moves what start-up allocated out of the garbage collector's reach: a full collection over the
~160k objects of its modules and services stops every request for a few hundred milliseconds on a busy machine."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app, freeze_startup_objects
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.one_database  # the process's collector is what the test checks, not the database


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()  # another test of this process may have started an app already
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_start_up_freezes_the_objects_it_allocated_once(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings())) as client:
        assert client.get("/health").status_code in (200, 503)
        frozen = gc.get_freeze_count()
        assert frozen > 0, "the app started without freezing its start-up objects"
        # A second app in the same process (tests, a reload) leaves the frozen generation alone.
        assert freeze_startup_objects() is False
        assert gc.get_freeze_count() == frozen
