"""Fault-injection fixtures: a private Redis, a fake analysis server and a cluster per scenario.

Each scenario records its tally; they are printed together at the end of the run
(and written to test-artifacts/faults.txt), pass or fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devserver.redis import RedisServer
from tests.faults.cluster import Cluster, Tally
from tests.support.fake_services import FakeServices

TALLIES: list[Tally] = []

# A scenario starts Redis, an API and workers, injects its fault and drains: on a shared, loaded
# machine that outlasts the suite's 120 s per test. Each scenario's own deadlines still apply.
FAULT_SCENARIO_TIMEOUT_S = 300


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.slow)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(FAULT_SCENARIO_TIMEOUT_S))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLIES:
        return
    lines = [tally.line() for tally in TALLIES]
    terminalreporter.section("fault scenarios (Jepsen-style counts)")
    for line in lines:
        terminalreporter.write_line(line)
    out = Path(str(terminalreporter.config.rootpath)) / "test-artifacts" / "faults.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


@pytest.fixture
def fault_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path, fault_redis: RedisServer, fake: FakeServices) -> Iterator[Callable[..., Cluster]]:
    built: list[Cluster] = []

    def build(**overrides: Any) -> Cluster:
        instance = Cluster(tmp_path, fault_redis, fake, **overrides)
        built.append(instance)
        return instance

    yield build
    for instance in built:
        instance.stop_all()


@pytest.fixture
def record() -> Callable[[Tally], Tally]:
    """Keeps a scenario's tally for the end-of-run summary."""

    def keep(tally: Tally) -> Tally:
        TALLIES.append(tally)
        print(tally.line())
        return tally

    return keep
