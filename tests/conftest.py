"""Fixtures: a private redis-server per session, a fresh database per test, real processes on demand."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

from core.db import migrate
from core.settings import Settings, load_settings
from devserver.ports import PORTS
from devserver.redis import RedisServer
from jobs.runtime import Runtime, build_runtime, install_runtime
from tests.faults.cluster import FAULT_TALLIES
from tests.support.black_hole import BlackHole
from tests.support.fake_services import FakeServices
from tests.support.processes import ApiServer, ManagedProcess, kill_all, start_workers

if TYPE_CHECKING:
    from tests.support.object_store import ObjectStoreServer
    from tests.support.postgres import PostgresServer

# Children and in-process code must never read a developer's .env.
os.environ["ENV_FILE"] = ""

ADMIN_KEY = "test-admin-key-0123456789"
# Standard Webhooks secret of the test deployments (24 bytes, base64).
SIGNING_SECRET = "whsec_dGVzdC1zaWduaW5nLXNlY3JldC0wMTIzNDU2Nzg5"
# Test receivers listen on loopback, which the SSRF guard refuses by default.
LOOPBACK_ALLOWED = "127.0.0.0/8"
SettingsFactory = Callable[..., Settings]
# Every database-dependent test runs on each of these (`--databases` chooses).
DATABASES = ("sqlite", "postgres")
CHOSEN_DATABASES = pytest.StashKey[tuple[str, ...]]()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test (restarted first if a test stopped it)."""
    if not redis_server.running:
        redis_server.start()
    with redis_server.client() as client:
        client.flushall()
        client.config_set("maxmemory", 0)
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL for the session, started on first use (Debian's postgresql-15)."""
    from tests.support.postgres import PostgresServer  # psycopg is needed by the tests that use it only

    server = PostgresServer()
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database at the latest migration, emptied for a later test (or dropped) after it."""
    name, url = postgres_server.fresh_database()
    yield url
    postgres_server.release_database(name)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--databases",
        default=",".join(DATABASES),
        help=f"comma-separated databases the database-dependent tests run on (default: {','.join(DATABASES)})",
    )


def pytest_configure(config: pytest.Config) -> None:
    chosen = [name.strip() for name in str(config.getoption("--databases")).split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(DATABASES))
    if unknown or not chosen:
        raise pytest.UsageError(f"--databases: expected some of {','.join(DATABASES)}, got {unknown or 'none'}")
    config.stash[CHOSEN_DATABASES] = tuple(chosen)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # test processes side by side hand out ports from shares of their own
        PORTS.use_share(int(str(workerinput["workerid"]).removeprefix("gw")), int(workerinput["workercount"]))


# The fault tallies' hooks live here, not in tests/faults/conftest.py: that one is loaded only when
# collection reaches it, after the session started, and never in xdist's controlling process (which
# collects nothing), so its summary was printed by no one.


def pytest_sessionstart(session: pytest.Session) -> None:
    """The controlling process starts a run afresh: no fault tally from an earlier run is reported."""
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(Path(str(session.config.rootpath)) / FAULT_TALLIES, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The controlling process prints every test process's fault tallies and keeps them in a file."""
    config = terminalreporter.config
    if hasattr(config, "workerinput"):
        return
    files = sorted((Path(str(config.rootpath)) / FAULT_TALLIES).glob("*.txt"))
    lines = sorted(line for path in files for line in path.read_text().splitlines() if line)
    if not lines:
        return
    terminalreporter.section("fault scenarios (Jepsen-style counts)")
    for line in lines:
        terminalreporter.write_line(line)
    out = Path(str(config.rootpath)) / "test-artifacts" / "faults.txt"
    out.write_text("\n".join(lines) + "\n")


def databases_for(item: pytest.Item, chosen: tuple[str, ...]) -> tuple[str, ...]:
    """The databases this run of a test is kept on: all chosen, the first (`one_database`), or, for a
    `pairwise(name, offset=k)` test, the one paired with its value of `name`: value i runs on chosen
    database (i + k) mod len(chosen), so each value runs once and each database sees some value (all of
    them when one database is chosen). Tests alternate `offset` so that each value meets each database."""
    if item.get_closest_marker("one_database"):
        return chosen[:1]
    pairwise = item.get_closest_marker("pairwise")
    callspec = getattr(item, "callspec", None)
    if pairwise is None or callspec is None:
        return chosen
    name = str(pairwise.args[0])
    if name not in callspec.indices:
        raise pytest.UsageError(f"{item.nodeid}: pairwise({name!r}) names no parameter of the test")
    offset = int(pairwise.kwargs.get("offset", 0))
    return (chosen[(callspec.indices[name] + offset) % len(chosen)],)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leaves out the runs on databases that were not chosen (`--databases`), the runs of `one_database`
    tests on any but the first chosen, and the runs of `pairwise` tests on any but their value's database."""
    chosen = config.stash[CHOSEN_DATABASES]
    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        database = callspec.params.get("db_backend") if callspec is not None else None
        (kept if database is None or database in databases_for(item, chosen) else left_out).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


@pytest.fixture(params=DATABASES)
def db_backend(request: pytest.FixtureRequest) -> str:
    """Which database this run of a database-dependent test uses: each such test runs on every one."""
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per test process; each test gets a copy (alembic costs CPU every run)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "audiokit.db"
    migrate(f"sqlite:///{path}")
    return path


def _sqlite_copy(template: Path, path: Path) -> str:
    """Copies the migrated template to `path`; its URL. SQLite's backup copies a consistent database even
    if the template's WAL was not checkpointed."""
    with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(path)) as copy:
        source.backup(copy)
    return f"sqlite:///{path}"


@pytest.fixture
def database_url(db_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated database for this test: a SQLite file, or a database on the session's PostgreSQL."""
    if db_backend == "sqlite":
        yield _sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path / "audiokit.db")
        return
    postgres: str = request.getfixturevalue("postgres_url")  # a fresh database, dropped after the test
    yield postgres


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStoreServer]:
    """A private S3-compatible server (moto) for the session, started on first use."""
    from tests.support.object_store import ObjectStoreServer  # boto3 is needed by the tests that use it only

    server = ObjectStoreServer(tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def s3_settings(object_store: ObjectStoreServer) -> dict[str, Any]:
    """Settings overrides that put this test's storage in a fresh bucket of the session's S3 server."""
    return object_store.settings_for(object_store.new_bucket())


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def deployment_settings(redis_url: str, database_url: str, storage_dir: Path, /, **overrides: Any) -> Settings:
    """Settings of a test deployment: the given Redis, database and storage, the test keys, fast retries."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": database_url,
        "storage_dir": storage_dir,
        "admin_api_key": ADMIN_KEY,
        "callback_signing_secret": SIGNING_SECRET,
        "callback_allowed_networks": LOOPBACK_ALLOWED,
        "rq_retry_intervals": "1",
        "worker_count": 1,
        "sse_poll_interval_s": 0.5,
    }
    return load_settings(env_file="", **(values | overrides))


@pytest.fixture
def make_settings(tmp_path: Path, redis_url: str, database_url: str) -> SettingsFactory:
    """Builds settings for this test: its own database and storage, the session's Redis, fast retries."""

    def build(**overrides: Any) -> Settings:
        settings = deployment_settings(redis_url, database_url, tmp_path / "uploads", **overrides)
        if "database_url" in overrides:  # the fixture's own database is migrated already
            migrate(settings.database_url)
        return settings

    return build


# A module whose tests share one deployment (API and workers started once, not once per test) gets its
# settings from `make_module_settings`: a Redis of its own, which no test's flush of the session's Redis
# reaches, and a database of its own. Its `db_backend` must then be module-scoped too:
# `pytest.mark.parametrize("db_backend", DATABASES, scope="module")`. The tests of such a module look
# at their own jobs only (by id), and `xdist_group` keeps the module in one test process.


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("module-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_database_url(
    db_backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh, migrated database shared by the tests of a module (of one `db_backend` parameter)."""
    if db_backend == "sqlite":
        yield _sqlite_copy(
            request.getfixturevalue("sqlite_template"), tmp_path_factory.mktemp("module-db") / "audiokit.db"
        )
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    name, url = postgres.fresh_database()
    yield url
    postgres.release_database(name)


@pytest.fixture(scope="module")
def make_module_settings(
    tmp_path_factory: pytest.TempPathFactory, module_redis: RedisServer, module_database_url: str
) -> SettingsFactory:
    """Builds settings for a deployment shared by the tests of a module (see above)."""
    storage = tmp_path_factory.mktemp("module-uploads")

    def build(**overrides: Any) -> Settings:
        return deployment_settings(module_redis.url, module_database_url, storage, **overrides)

    return build


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture
def make_runtime(make_settings: SettingsFactory) -> Iterator[Callable[..., Runtime]]:
    """Builds the per-process runtime jobs use, from test settings, and installs it for this test."""

    def build(**overrides: Any) -> Runtime:
        runtime = build_runtime(make_settings(**overrides))
        install_runtime(runtime)
        return runtime

    yield build
    install_runtime(None)


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where a test leaves logs and screenshots worth keeping (test-artifacts/<test name>)."""
    name: str = request.node.name
    root = Path(str(request.config.rootpath)) / "test-artifacts" / name[:100]
    root.mkdir(parents=True, exist_ok=True)
    return root


ProcessFactory = Callable[..., ManagedProcess]


@pytest.fixture
def launched() -> Iterator[list[ManagedProcess]]:
    """The processes this test started (workers, APIs), stopped together after it."""
    started: list[ManagedProcess] = []
    yield started
    kill_all(started)


@pytest.fixture
def workers(tmp_path: Path, launched: list[ManagedProcess]) -> Callable[..., ManagedProcess]:
    """Starts real workers through start_worker.sh; every one is stopped after the test."""
    started = launched

    def start(settings: Settings, *args: str, **env: Any) -> ManagedProcess:
        process = start_workers(settings, tmp_path / f"worker-{len(started)}.log", *args, **env)
        started.append(process)
        return process

    return start


@pytest.fixture
def api_server(tmp_path: Path, launched: list[ManagedProcess]) -> Callable[[Settings], ApiServer]:
    """Starts the real API under uvicorn; stopped after the test."""

    def start(settings: Settings) -> ApiServer:
        server = ApiServer(settings, tmp_path / f"api-{sum(isinstance(p, ApiServer) for p in launched)}.log")
        launched.append(server)
        return server

    return start


@pytest.fixture
def fake() -> Iterator[FakeServices]:
    """A fake analysis server and callback receiver on loopback, stopped after the test."""
    services = FakeServices().start()
    yield services
    services.stop()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    """A callback receiver on loopback that accepts connections and never answers."""
    hole = BlackHole()
    yield hole
    hole.stop()
