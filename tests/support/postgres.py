"""A private PostgreSQL server (Debian's `postgresql-15`) for the test suite.

Started once per session like the private Redis (`devserver/redis.py`): `initdb`
into a temporary directory, then `postgres` on a free loopback port with its
unix socket in that directory. Durability is switched off (`fsync`,
`synchronous_commit`, `full_page_writes`): a test database only has to outlive
its test. Each test gets its own database, copied from a migrated template
(`CREATE DATABASE ... TEMPLATE`), which is much faster than migrating again.

A copy still costs ~0.3 s of the server's CPU (it writes the template's ~8 MB of catalogs through
the WAL), once per database-dependent test. So a test's database, once the test is done with it, is
emptied and kept for a later test (`release_database`) when its schema is still the template's: its
connections are ended, it is renamed out of reach of any process of the test that still knows its
name, and every table is truncated (sequences restarted). A database whose schema a test changed
(a migration test), or that cannot be emptied, is dropped instead, as before.

`initdb` and `postgres` refuse to run as root, so as root (CI, `make test` in a
container) the server runs as Debian's `postgres` user (created by the package),
or `nobody` when that user does not exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from core.db import migrate
from devserver.ports import free_port

PG_VERSION = "15"  # Debian 12's; the binaries live off PATH, under /usr/lib/postgresql/<version>/bin
START_TIMEOUT_S = 60.0
SUPERUSER = "audiokit"
TEMPLATE_DB = "audiokit_template"
SPARE_PREFIX = "spare_"  # an emptied database waiting for its next test
# What a database's schema is, as text: tables, columns, indexes, constraints, sequences, enum labels and
# the migration it is at. Two databases with the same text have the same schema.
_SCHEMA_QUERIES = (
    "SELECT table_name, column_name, data_type, column_default, is_nullable FROM information_schema.columns"
    " WHERE table_schema = 'public' ORDER BY 1, 2",
    "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "SELECT sequencename, start_value, increment_by FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1",
    "SELECT t.typname, e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid ORDER BY 1, e.enumsortorder",
    "SELECT proname, pg_get_function_identity_arguments(oid) FROM pg_proc"
    " WHERE pronamespace = 'public'::regnamespace ORDER BY 1, 2",
    "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2",
    "SELECT version_num FROM alembic_version ORDER BY 1",
)
SERVICE_USERS = ("postgres", "nobody")  # who runs the server when we are root, in order of preference
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Room for the suite's processes: API, worker pools and their work-horses each hold a small pool.
    "max_connections": "200",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}


def pg_binary(name: str) -> str:
    """The path of a PostgreSQL program (`initdb`, `postgres`): Debian's directory first, then PATH."""
    candidates = [Path(f"/usr/lib/postgresql/{PG_VERSION}/bin") / name]
    candidates += sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found: `make setup` installs PostgreSQL (Debian: apt-get install postgresql-{PG_VERSION})"
        )
    return found


def _service_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError(f"running as root and none of the users {', '.join(SERVICE_USERS)} exists to run PostgreSQL")


class PostgresServer:
    """One private `postgres` process, its data directory, and databases made from a migrated template."""

    def __init__(self, port: int | None = None) -> None:
        # Not under pytest's tmp_path: that is private to root, and the server may run as another user.
        self.root = Path(tempfile.mkdtemp(prefix="audiokit-pg-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._account = _service_account()
        self._template_ready = False
        self._template_schema: str | None = None  # the template's `_schema_of`, read from its first copy
        self._names = itertools.count(1)
        self._spares: list[str] = []
        if self._account is not None:
            os.chown(self.root, self._account.pw_uid, self._account.pw_gid)
        self.root.chmod(0o700)

    def _as_account(self) -> dict[str, Any]:
        if self._account is None:
            return {}
        env = dict(os.environ, HOME=str(self.root), USER=self._account.pw_name)
        return {"user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": [], "env": env}

    def url(self, database: str) -> str:
        """A SQLAlchemy URL of `database` on this server (trust authentication, loopback TCP)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, autocommit=True, connect_timeout=5
        )

    def start(self) -> None:
        """Initialises the data directory on first use, starts the server and waits until it answers."""
        if not self.data_dir.exists():
            subprocess.run(
                [pg_binary("initdb"), "--pgdata", str(self.data_dir), "--username", SUPERUSER,
                 "--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-sync"],
                check=True, capture_output=True, cwd=self.root, **self._as_account(),
            )  # fmt: skip
        options = [item for key, value in SERVER_SETTINGS.items() for item in ("-c", f"{key}={value}")]
        argv = [pg_binary("postgres"), "-D", str(self.data_dir), "-p", str(self.port), "-k", str(self.root), *options]
        with self.log_path.open("ab") as log:
            if self._account is not None:
                os.chown(self.log_path, self._account.pw_uid, self._account.pw_gid)
            # Its own session: a terminal's Ctrl-C reaches only pytest, which then stops the server.
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True, **self._as_account()
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with self.connect():
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"postgres exited with {self.process.returncode}: {self._log_tail()}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres on port {self.port} did not answer within {START_TIMEOUT_S}s")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def create_database(self, name: str, template: str = "template0") -> str:
        with self.connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drops `name`, ending the connections still open to it (engines cached by the code under test)."""
        with self.connect() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def fresh_database(self) -> tuple[str, str]:
        """A new, empty database at the latest migration; returns its name and URL.

        The first call migrates a template database; later ones reuse a database a finished test
        released (renamed: a cheap catalog update), or copy the template.
        """
        if not self._template_ready:
            migrate(self.create_database(TEMPLATE_DB))  # alembic's engine is disposed: the template is idle
            self._template_ready = True
        name = f"test_{os.getpid()}_{next(self._names)}"
        while self._spares:
            spare = self._spares.pop()
            try:
                with self.connect() as connection:
                    connection.execute(f'ALTER DATABASE "{spare}" RENAME TO "{name}"')
            except psycopg.Error:
                self.drop_database(spare)
                continue
            return name, self.url(name)
        url = self.create_database(name, template=TEMPLATE_DB)
        if self._template_schema is None:
            with self.connect(name) as connection:
                self._template_schema = _schema_of(connection)
        return name, url

    def release_database(self, name: str) -> None:
        """A test is done with `name`: emptied and kept for a later `fresh_database` when its schema is
        still the template's, dropped otherwise (see the module's docstring)."""
        spare = f"{SPARE_PREFIX}{name}"
        try:
            with self.connect() as connection:
                _end_connections(connection, name)
                # Renamed before it is emptied: a process of the test that is still running and connects
                # again by the old name is refused, and cannot write into the next test's database.
                connection.execute(f'ALTER DATABASE "{name}" RENAME TO "{spare}"')
            with self.connect(spare) as connection:
                if self._template_schema is None or _schema_of(connection) != self._template_schema:
                    raise _NotReusable(name)
                tables = [
                    row[0]
                    for row in connection.execute(
                        "SELECT quote_ident(tablename) FROM pg_tables"
                        " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                    )
                ]
                if tables:
                    connection.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
                for (sequence,) in connection.execute(
                    "SELECT quote_ident(sequencename) FROM pg_sequences WHERE schemaname = 'public'"
                ).fetchall():
                    connection.execute(f"ALTER SEQUENCE {sequence} RESTART")
        except (psycopg.Error, _NotReusable):
            self.drop_database(name)
            self.drop_database(spare)
            return
        self._spares.append(spare)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stops the server (SIGINT: PostgreSQL's fast shutdown) and deletes its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


class _NotReusable(Exception):
    """Raised when a released database's schema is no longer the template's."""


def _schema_of(connection: psycopg.Connection[Any]) -> str:
    """The schema of the database `connection` is on, as text (see `_SCHEMA_QUERIES`), hashed."""
    digest = hashlib.sha256()
    for query in _SCHEMA_QUERIES:
        for row in connection.execute(query):
            digest.update(repr(row).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _end_connections(connection: psycopg.Connection[Any], name: str, timeout_s: float = 10.0) -> None:
    """Ends every session on database `name` and waits until they are gone (a rename or a drop needs that;
    `DROP ... WITH (FORCE)` would wait for them in steps of 100 ms)."""
    deadline = time.monotonic() + timeout_s
    while True:
        (left,) = connection.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone() or (0,)
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.005)
