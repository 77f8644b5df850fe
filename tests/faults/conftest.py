"""Fault-injection fixtures: a private Redis, a fake analysis server and a cluster per scenario.

Each scenario records its tally; they are printed together at the end of the run
(and written to test-artifacts/faults.txt), pass or fail.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devserver.redis import RedisServer
from tests.faults.cluster import FAULT_TALLIES, Cluster, Tally
from tests.support.fake_services import FakeServices
from tests.support.processes import kill_all

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


def _tally_dir(config: pytest.Config) -> Path:
    """Where each test process writes its scenarios' lines (emptied when a run starts: tests/conftest.py)."""
    return Path(str(config.rootpath)) / FAULT_TALLIES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    config = terminalreporter.config
    files = sorted(_tally_dir(config).glob("*.txt"))
    lines = sorted(line for path in files for line in path.read_text().splitlines() if line)
    if not lines:
        return
    terminalreporter.section("fault scenarios (Jepsen-style counts)")
    for line in lines:
        terminalreporter.write_line(line)
    out = Path(str(config.rootpath)) / "test-artifacts" / "faults.txt"
    out.write_text("\n".join(lines) + "\n")


@pytest.fixture
def fault_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(
    tmp_path: Path, fault_redis: RedisServer, fake: FakeServices, database_url: str
) -> Iterator[Callable[..., Cluster]]:
    built: list[Cluster] = []

    def build(**overrides: Any) -> Cluster:
        instance = Cluster(tmp_path, fault_redis, fake, **({"database_url": database_url} | overrides))
        built.append(instance)
        return instance

    yield build
    for instance in built:
        kill_all(instance.processes)


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[[Tally], Tally]:
    """Keeps a scenario's tally for the end-of-run summary (written at once: a later failure keeps it)."""
    directory = _tally_dir(request.config)

    def keep(tally: Tally) -> Tally:
        params = getattr(getattr(request.node, "callspec", None), "params", {})
        line = tally.line() + (f" database={params['db_backend']}" if "db_backend" in params else "")
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / f"{os.getpid()}.txt").open("a") as out:
            out.write(line + "\n")
        print(line)
        return tally

    return keep
