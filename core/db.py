"""Database engine, sessions and migrations.

One engine per URL and process. A worker builds it before it forks a
work-horse per job, and the work-horse keeps the engine (its compiled-statement
cache, its dialect, already imported) but never a connection: after a fork the
child drops the pool it inherited without closing the parent's connections
(SQLAlchemy's `engine.dispose(close=False)` pattern) and opens its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from core.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_BUSY_TIMEOUT_MS = 30_000  # workers and the API write concurrently; wait for the lock, never fail fast
# A server that accepts but never answers must fail health checks and jobs, not hang them.
SERVER_CONNECT_TIMEOUT_S = 10
# Connections older than this are replaced: firewalls and poolers drop long-idle ones silently.
SERVER_POOL_RECYCLE_S = 1800
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == "sqlite:///:memory:":
        return None
    return Path(url[len(prefix) :])


def make_engine(url: str) -> Engine:
    """Builds an engine; SQLite gets WAL, a busy timeout and foreign keys; PostgreSQL a connect timeout."""
    if url.startswith("postgresql"):
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_recycle=SERVER_POOL_RECYCLE_S,
            connect_args={"connect_timeout": SERVER_CONNECT_TIMEOUT_S, "application_name": "audiokit"},
        )
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_recycle=SERVER_POOL_RECYCLE_S)
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL + NORMAL survives process crashes; only an OS crash can lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


_databases: dict[str, Database] = {}
_lock = threading.Lock()
# Pools a forked child inherited: kept referenced, never closed or collected, since closing (or a
# finalizer of) a PostgreSQL connection there would end the parent's session on the shared socket.
_inherited_pools: list[Any] = []


def get_database(url: str) -> Database:
    """The database for `url` in this process (inherited across a fork, with a pool of the child's own)."""
    with _lock:
        database = _databases.get(url)
        if database is None:
            database = _databases[url] = Database(url)
        return database


def _after_fork_in_child() -> None:
    """Gives every inherited engine a fresh, empty pool, leaving the parent's connections untouched."""
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it at the fork
    for database in _databases.values():
        _inherited_pools.append(database.engine.pool)
        database.engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # only start-up and tests need alembic

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Applies every migration (`alembic upgrade head`)."""
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    from alembic import command

    command.upgrade(alembic_config(url), "head")
