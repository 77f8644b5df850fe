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
from tests.faults.cluster import FAULT_TALLIES, FORK, Cluster, Tally
from tests.support.fake_services import FakeServices
from tests.support.processes import kill_all

# A scenario starts Redis, an API and workers, injects its fault and drains: on a shared, loaded
# machine that outlasts the suite's 120 s per test. Each scenario's own deadlines still apply.
FAULT_SCENARIO_TIMEOUT_S = 300


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets `WORKER_MODES = BOTH_WORKER_MODES` runs its scenarios with forking workers and
    with `--no-fork` ones, paired with the databases (`pairwise`): fork on the first chosen database and
    no-fork on the second, unless the test's own `pairwise` marker swaps them (`offset=1`). The scenarios
    check what workers and Redis do; each database still sees every one."""
    modes = getattr(metafunc.module, "WORKER_MODES", None)
    if modes and "worker_mode" in metafunc.fixturenames:
        metafunc.parametrize("worker_mode", modes, indirect=True)


@pytest.hookimpl(tryfirst=True)  # before the root conftest leaves out the runs on other databases
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.slow)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(FAULT_SCENARIO_TIMEOUT_S))
            callspec = getattr(item, "callspec", None)
            paired = callspec is not None and {"worker_mode", "db_backend"} <= callspec.params.keys()
            if paired and item.get_closest_marker("pairwise") is None:
                item.add_marker(pytest.mark.pairwise("worker_mode"))


@pytest.fixture
def worker_mode(request: pytest.FixtureRequest) -> str:
    """How the scenario's workers run jobs: "fork" unless its module runs it in both modes."""
    return str(getattr(request, "param", FORK))


def _tally_dir(config: pytest.Config) -> Path:
    """Where each test process writes its scenarios' lines (emptied when a run starts: tests/conftest.py)."""
    return Path(str(config.rootpath)) / FAULT_TALLIES


@pytest.fixture
def fault_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(
    tmp_path: Path, fault_redis: RedisServer, fake: FakeServices, database_url: str, worker_mode: str
) -> Iterator[Callable[..., Cluster]]:
    built: list[Cluster] = []

    def build(**overrides: Any) -> Cluster:
        values = {"database_url": database_url} | overrides
        instance = Cluster(tmp_path, fault_redis, fake, worker_mode=worker_mode, **values)
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
        line += f" workers={params['worker_mode']}" if "worker_mode" in params else ""
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / f"{os.getpid()}.txt").open("a") as out:
            out.write(line + "\n")
        print(line)
        return tally

    return keep
