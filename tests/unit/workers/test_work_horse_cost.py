"""What a work-horse pays before its job runs: it opens its Redis connections anew, so opening one must be cheap."""

from __future__ import annotations

import pytest
import redis
import redis.utils

from core.settings import Settings
from redis_client import make_redis

pytestmark = pytest.mark.one_database


@pytest.mark.parametrize("role", ["api", "worker"])
def test_a_new_redis_connection_does_not_look_the_client_version_up_in_package_metadata(
    settings: Settings, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = make_redis(settings, role=role)

    def no_lookup(name: str) -> str:
        raise AssertionError(f"package metadata read for {name!r} on a new connection")

    monkeypatch.setattr(redis.utils.metadata, "version", no_lookup)
    opened = connection.connection_pool.make_connection()
    try:
        opened.connect()  # the version still goes to Redis (CLIENT SETINFO), as redis-py's own would
        assert opened.driver_info is not None
        assert opened.driver_info.lib_version == redis.__version__
    finally:
        opened.disconnect()
